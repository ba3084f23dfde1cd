"""Events: the `http.request` event and the CloudEvents envelopes eventgate builds."""
