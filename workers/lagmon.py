"""``python -m workers.lagmon``: the Procfile entry point of :mod:`workers.monitor.lagmon`."""

from workers.monitor.lagmon import main

if __name__ == "__main__":
    main()
