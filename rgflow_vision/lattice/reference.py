"""Reference values to check a sampler against (``reference/lattice.md``), looked up by action and ``L``.

Exact values for the free complex field (any ``t``, ``mu > 4|t|`` and ``L``) come from
:class:`~.actions.FreeComplexField`; Monte Carlo values are the table of lattice.md, which
lists few digits, so a lookup matches parameters to ``1e-9``.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from .actions import FreeComplexField


@dataclass
class Reference:
    """What is known for one action on an ``L x L`` lattice; ``None`` where nothing is.

    Values are ``(value, error)`` pairs, the error ``0.0`` for exact ones. ``two_point`` is ``G(r)``
    along an axis for ``r = 0, 1, ...`` (as many as known). ``exact`` says whether the values are
    exact; ``notes`` are caveats worth printing next to them.
    """

    source: str
    exact: bool = False
    log_z: tuple[float, float] | None = None
    chi: tuple[float, float] | None = None
    phi2: tuple[float, float] | None = None
    two_point: list[tuple[float, float]] | None = None
    notes: list[str] = field(default_factory=list)


def _g(values: list[float], digits: int = 4) -> list[tuple[float, float]]:
    """G(r) listed to ``digits`` decimals: half a unit of the last digit as the error."""
    return [(v, 0.5 * 10.0**-digits) for v in values]


# (name, normalised parameters, L) -> Reference; parameters as produced by _key.
MONTE_CARLO = {
    ("real_phi4", (-4.0, 8.0), 8): Reference(
        source="lattice.md (checkerboard Metropolis)",
        chi=(0.7440, 0.0013),
        phi2=(0.14349, 0.00002),
        two_point=_g([0.14349, 0.04431, 0.01564, 0.00666, 0.00452], 5),
    ),
    ("real_phi4", (-4.0, 6.975), 6): Reference(source="lattice.md (checkerboard Metropolis)", chi=(1.0691, 0.0034)),
    ("real_phi4", (-4.0, 6.008), 8): Reference(source="lattice.md (checkerboard Metropolis)", chi=(1.898, 0.008)),
    ("complex_phi4", (0.2, 1.145), 8): Reference(
        source="lattice.md (checkerboard Metropolis, 3 x 1024 chains, corrected 2026-11-30), massive phase",
        chi=(1.8481, 0.0024),
        phi2=(0.82734, 0.00005),
        two_point=[(0.82734, 0.00005), (0.14108, 0.00004), (0.02531, 0.00004), (0.00490, 0.00005), (0.00180, 0.00004)],
    ),
    ("complex_phi4", (0.6, 1.145), 8): Reference(
        source="lattice.md (checkerboard Metropolis), critical (quasi-long-range order)",
        chi=(68.62, 0.07),
        notes=["this repository's scripts/lattice_mc.py (3 x 256 chains x 3000 sweeps) gives 68.716(35): 1.2 sigma"],
    ),
    ("complex_phi4", (0.2, 1.145), 16): Reference(
        source="this repository's scripts/lattice_mc.py (3 x 256 chains x 2500 sweeps, docs/lattice/mc_massive16.txt)",
        chi=(1.8507, 0.0057),
        phi2=(0.82733, 0.00008),
        notes=["from one code only; the same code gives 1.8488(15) at L = 8, against lattice.md's 1.8481(24)"],
    ),
    ("complex_phi4", (0.3, 1.145), 16): Reference(
        source="this repository's scripts/lattice_mc.py (2 x 256 chains x (1000 + 2000) sweeps, "
               "docs/lattice/mc_k0.3_L16.json)",
        chi=(3.920, 0.019),
        phi2=(0.88443, 0.00013),
        two_point=[(0.88443, 0.00013), (0.25113, 0.00028), (0.07907, 0.00017), (0.02685, 0.00013), (0.00958, 0.00012), (0.00351, 0.00012), (0.00136, 0.00013), (0.00047, 0.00015), (0.00021, 0.00017)],
        notes=["from one code only: tau_int(|M|^2) = 12-12 sweeps, thermalisation 82-84 tau"],
    ),
    ("complex_phi4", (0.4, 1.145), 16): Reference(
        source="this repository's scripts/lattice_mc.py (2 x 256 chains x (2500 + 3000) sweeps, "
               "docs/lattice/mc_k0.4_L16.json)",
        chi=(17.42, 0.15),
        phi2=(1.00224, 0.00034),
        two_point=[(1.00224, 0.00034), (0.45197, 0.00051), (0.24090, 0.00050), (0.14155, 0.00063), (0.08855, 0.00074), (0.05856, 0.00077), (0.04146, 0.00065), (0.03258, 0.00068), (0.02980, 0.00070)],
        notes=["from one code only: tau_int(|M|^2) = 60-61 sweeps, thermalisation 41-42 tau"],
    ),
    ("complex_phi4", (0.5, 1.145), 16): Reference(
        source="this repository's scripts/lattice_mc.py (2 x 256 chains x (10000 + 20000) sweeps, "
               "docs/lattice/mc_k0.5_L16.json)",
        chi=(154.50, 0.12),
        phi2=(1.25408, 0.00008),
        two_point=[(1.25408, 0.00008), (0.87392, 0.00015), (0.73563, 0.00023), (0.66755, 0.00031), (0.62759, 0.00039), (0.60238, 0.00045), (0.58657, 0.00049), (0.57781, 0.00053), (0.57502, 0.00054)],
        notes=["from one code only: tau_int(|M|^2) = 96-100 sweeps, thermalisation 100-104 tau; the first runs' "
               "154.17(33) (2500 + 3000 sweeps, mc_k0.5_L16_short.json) agrees at 0.9 sigma"],
    ),
    ("complex_phi4", (0.6, 1.145), 16): Reference(
        source="this repository's scripts/lattice_mc.py (2 x 256 chains x (10000 + 20000) sweeps, "
               "docs/lattice/mc_k0.6_L16.json)",
        chi=(251.138, 0.076),
        phi2=(1.47615, 0.00005),
        two_point=[(1.47615, 0.00005), (1.18572, 0.00008), (1.08351, 0.00012), (1.03225, 0.00016), (1.00130, 0.00021), (0.98125, 0.00025), (0.96845, 0.00029), (0.96126, 0.00032), (0.95895, 0.00033)],
        notes=["from one code only: tau_int(|M|^2) = 58-59 sweeps, thermalisation 170-172 tau",
               "the first runs' 250.78(23) (2500 + 3000 sweeps, mc_k0.6_L16_short.json) sits 1.5 sigma below; "
               "the earliest 250.32(40), thermalised 1000 sweeps (12-17 tau), 2.0 sigma"],
    ),
    ("complex_phi4", (0.7, 1.145), 16): Reference(
        source="this repository's scripts/lattice_mc.py (2 x 256 chains x (10000 + 20000) sweeps, "
               "docs/lattice/mc_k0.7_L16.json)",
        chi=(321.36, 0.80),
        phi2=(1.67454, 0.00015),
        two_point=[(1.67454, 0.00015), (1.43347, 0.00031), (1.34774, 0.00066), (1.30331, 0.00115), (1.27562, 0.00171), (1.25724, 0.00225), (1.24530, 0.00271), (1.23855, 0.00301), (1.23636, 0.00311)],
        notes=["from one code only: tau_int(|M|^2) = 238-381 sweeps, thermalisation 26-42 tau; the first runs' "
               "318.3(1.6) had measured 3000 sweeps, which showed tau 43-47"],
    ),

    ("complex_phi4", (0.6, 1.145), 32): Reference(
        source="this repository's scripts/lattice_mc.py (2 x 128 chains x (30000 + 64000) sweeps, "
               "docs/lattice/mc_k0.6_L32_long.json)",
        chi=(922.1, 4.3),
        phi2=(1.47534, 0.00006),
        two_point=[(1.47534, 0.00006), (1.18402, 0.00008), (1.07989, 0.00013), (1.02576, 0.00020), (0.99085, 0.00027),
                   (0.96565, 0.00034), (0.94636, 0.00042), (0.93107, 0.00049), (0.91876, 0.00056), (0.90877, 0.00064),
                   (0.90069, 0.00071), (0.89420, 0.00078), (0.88910, 0.00083), (0.88527, 0.00088), (0.88260, 0.00091),
                   (0.88103, 0.00093), (0.88051, 0.00094)],
        notes=["from one code only: run 0 922.21(59) with tau_int(|M|^2) = 259 sweeps (thermalisation 116 tau), run 1 "
               "913.6(5.7) with tau 3900 (a slow mode, 8 tau of thermalisation); the error is half their difference",
               "the first runs (10000 thermalisation sweeps, 902.8(7.8)) were still relaxing from the random start"],
    ),
}


def _key(name: str, params: dict, size: int):
    """Normalised lookup key: the complex field in the kappa form ``(kappa, lam)`` where it has one."""
    params = {k: float(v) for k, v in params.items()}
    if name == "complex_phi4" and "kappa" not in params:
        t, mu, lam = params["t"], params["mu"], params["lam"]
        if abs(mu - (1 - 2 * lam)) < 1e-9:  # the kappa form up to the constant
            return name, (round(t, 9), round(lam, 9)), size
        return None
    if name == "complex_phi4":
        return name, (round(params["kappa"], 9), round(params["lam"], 9)), size
    if name == "real_phi4":
        return name, (round(params["m2"], 9), round(params["lam"], 9)), size
    return None


def _free_field(name: str, params: dict) -> tuple[FreeComplexField, float] | None:
    """The free field (and the constant per site the action adds) when the action is Gaussian."""
    params = {k: float(v) for k, v in params.items()}
    if name == "free_complex":
        return FreeComplexField(params["t"], params["mu"]), 0.0
    if name == "complex_phi4" and params.get("lam", 1.0) == 0.0:
        if "kappa" in params:  # kappa form with lam = 0: t = kappa, mu = 1, no constant
            t, mu = params["kappa"], 1.0
        else:
            t, mu = params["t"], params["mu"]
        if mu > 4 * abs(t):
            return FreeComplexField(t, mu), 0.0
    return None


def lookup(name: str, params: dict, size: int) -> Reference | None:
    """What is known for ``build_action(name, **params)`` on an ``L = size`` lattice, or ``None``.

    Free field: exact ``ln Z``, ``chi = 1/(mu - 4t)``, ``<phi^2> = G(0)`` and ``G(r)``, ``r = 0 .. L/2``.
    Otherwise the Monte Carlo row of lattice.md for these parameters and ``L``, if there is one.
    """
    free = _free_field(name, params)
    if free is not None:
        action, shift = free
        g = action.two_point(size, axis=True)[: size // 2 + 1].tolist()
        return Reference(
            source="exact (free field)",
            exact=True,
            log_z=(action.log_z(size) - shift * size**2, 0.0),
            chi=(action.susceptibility(), 0.0),
            phi2=(g[0], 0.0),
            two_point=[(v, 0.0) for v in g],
        )
    key = _key(name, params, size)
    return MONTE_CARLO.get(key) if key is not None else None
