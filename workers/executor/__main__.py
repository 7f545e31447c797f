"""``python -m workers.executor``: one executor process (DESIGN §8b)."""

from workers.executor.main import main

main()
