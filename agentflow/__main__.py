"""``python -m agentflow``: the same command line as ``agentflow``."""

from agentflow.cli import main

if __name__ == "__main__":
    main()
