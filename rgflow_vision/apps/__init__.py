"""The bodies of the root apps: compose nothing, build from the composed config, call the library.

``common`` is what every app shares (the command line, one error path, loading the checkpoint the
user named, writing a picture); ``train`` is train.py and evaluate.py; ``pictures`` the apps that
draw from a checkpoint (sample, mix, receptive fields, inpaint)."""
