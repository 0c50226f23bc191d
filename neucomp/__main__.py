"""`python -m neucomp` runs the command-line interface."""

from neucomp.cli import main

if __name__ == "__main__":
    main()
