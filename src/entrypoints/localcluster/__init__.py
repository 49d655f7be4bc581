"""A whole local control plane (etcd, kube-apiserver, scheduler, controller-manager) built from
the Go module proxy: ``binaries`` builds and caches them, ``cluster`` runs them."""
