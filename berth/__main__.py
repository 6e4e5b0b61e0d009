"""`python -m berth ...`: the `berth` command, for where the console script is not on PATH."""

from berth.cli import main

if __name__ == "__main__":
    main()
