"""Deployments onto orchestrators, generated from the inventory: a Docker Swarm stack
(`swarm`: the stack file, `docker stack deploy`, blue/green between legacy and target services)
and Kubernetes manifests (`k8s`). What every orchestrator runs of a service is in `workload`."""
