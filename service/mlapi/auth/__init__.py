"""Who may call and how much: API keys, rate limits and the access middleware that applies them."""
