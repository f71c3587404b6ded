"""``python -m occlabel.cli`` runs the command line (same as the ``occlabel`` script)."""

from occlabel.cli import main

if __name__ == "__main__":
    main()
