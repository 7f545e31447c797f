"""``python -m workers.bridge``: the Procfile entry point of :mod:`workers.kafka.bridge`."""

from workers.kafka.bridge import main

if __name__ == "__main__":
    main()
