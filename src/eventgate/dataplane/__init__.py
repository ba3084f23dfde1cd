"""The events port: eventgate's own HTTP/1.1 server and pooled upstream client."""
