"""The Docker Engine API as a second face of cumulod, on its own unix socket.

The stock ``docker`` CLI and docker-py drive Cumulo through it: Docker containers
are Cumulo instances (in one project, ``default`` unless configured), Docker images
are Cumulo images, and so on. This package translates shapes only; the work is
done by ``cumulo.services``.
"""
