"""One client per kind of agent; agents.clients.registry.client_for picks the right one."""
