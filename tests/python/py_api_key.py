#!/usr/bin/env python3
"""A tiny plugin for Kong's official Python plugin server (kong-pdk 0.36).

Used by crates/kong-emulator/tests/python_faithfulness.rs: the emulator drives this
reference server exactly as it drives ghasi-plugin-server, proving that the emulator speaks
the protocol the way Kong's own ecosystem expects. Run in dedicated mode:

    python py_api_key.py --kong-prefix DIR --no-lua-style   # socket DIR/py-api-key.sock
    python py_api_key.py --dump                             # plugin info JSON
"""

Schema = (
    {"header_name": {"type": "string", "default": "x-api-key"}},
    {"account_prefix": {"type": "string", "default": "acct-"}},
)

version = "0.1.0"
priority = 1250


class Plugin(object):
    def __init__(self, config):
        # Kong's injected keys (__seq__, __plugin_id, route_id, ...) are simply ignored.
        self.header_name = config.get("header_name", "x-api-key")
        self.account_prefix = config.get("account_prefix", "acct-")

    def access(self, kong):
        key = kong.request.get_header(self.header_name)
        if not key:
            kong.response.exit(
                401,
                {"message": "missing api key"},
                {"WWW-Authenticate": 'ApiKey realm="test"'},
            )
            return
        account = self.account_prefix + key
        kong.service.request.set_header("X-Account-Id", account)
        kong.ctx.shared.set("authenticated_groups", ["ghasi-authenticated"])
        kong.log.info("accepted key for ", account)


if __name__ == "__main__":
    from kong_pdk.cli import start_dedicated_server

    start_dedicated_server("py-api-key", Plugin, version, priority, Schema)
