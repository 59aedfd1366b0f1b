"""One-shot installer commands; the service never imports them."""
