"""The `platform: eks` stack: the cluster and everything that runs in it or grants it access."""
