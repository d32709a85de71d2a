"""What both platforms stand on: network, registry, images, cache, log groups, the API keys secret and the edge."""
