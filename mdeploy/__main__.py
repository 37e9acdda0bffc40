"""`python -m mdeploy` runs the same entry point as the `mdeploy` console script."""

from mdeploy.cli.app import main

if __name__ == "__main__":
    main()
