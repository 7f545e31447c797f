"""``python -m workers.mirror``: the Procfile entry point of :mod:`workers.kafka.mirror`."""

from workers.kafka.mirror import main

if __name__ == "__main__":
    main()
