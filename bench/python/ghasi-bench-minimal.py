"""ghasi-bench-minimal: the benchmark's equivalent of ghasi-api-key-lookup on a cache hit,
for Kong's official Python plugin server (PyPI kong-pdk 0.36).

Same PDK calls as our plugin (docs/design.md#round-trips-are-the-cost), none of its work:
  success: kong.request.get_header, kong.service.request.set_headers (identity headers,
           key removed with an empty array), kong.ctx.shared.set("authenticated_groups")
  no key:  kong.request.get_header, kong.response.exit(401, problem+json)
Loaded by `kong-python-pluginserver -d bench/python` (the plugin name is the file name).
"""

version = "0.1.0"
priority = 1250
Schema = ()

IDENTITY = {
    "X-Account-Id": "acc_bench_0001",
    "X-User-Id": "usr_bench_0001",
    "X-Consumer-Username": "acc_bench_0001",
    "X-Credential-Identifier": "key_hit_0",
    "x-api-key": [],
}
GROUPS = ["ghasi-authenticated"]
DENIED_BODY = ('{"type":"about:blank","title":"Unauthorized","status":401,'
               '"code":"credential_missing","detail":"No API key was presented."}')
DENIED_HEADERS = {"Content-Type": "application/problem+json", "WWW-Authenticate": "ApiKey"}


class Plugin(object):
    def __init__(self, config):
        self.config = config

    def access(self, kong):
        # Lua-style PDK (the server's default): every call returns (value, err).
        key, _ = kong.request.get_header("x-api-key")
        if not key:
            kong.response.exit(401, DENIED_BODY, DENIED_HEADERS)
            return
        kong.service.request.set_headers(IDENTITY)
        kong.ctx.shared.set("authenticated_groups", GROUPS)
