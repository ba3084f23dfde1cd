"""How functions are called: `http` (eventgateway, cloudevents and proxy modes)."""
