"""`python -m commerce.client`: prints the service config commerce.client's channels use,
as the JSON clients in other languages take (clients/service_config.json is its copy)."""

import json

from commerce.client import service_config

print(json.dumps(service_config(), indent=2))
