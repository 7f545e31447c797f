"""``python -m workers.coordinator``: one member of the coordinator fleet (DESIGN §7)."""

from workers.coordinator.main import main

main()
