"""``python -m workers.health``: the stable entry point (Procfile, DESIGN §7) of the prober."""

from workers.probe.prober import main

if __name__ == "__main__":
    main()
