"""RQ jobs: the phases of a request, run by workers against the bot API."""
