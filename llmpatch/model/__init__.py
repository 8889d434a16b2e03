"""The model runtime (extra `runtime`): loading base models and running them with patches."""
