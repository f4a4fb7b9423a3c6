'use strict'

// ghasi-bench-minimal: the benchmark's equivalent of ghasi-api-key-lookup on a cache hit,
// for Kong's official JavaScript plugin server (npm kong-pdk 0.6.0).
//
// Same PDK calls as our plugin (docs/design.md#round-trips-are-the-cost), none of its work:
//   success: kong.request.get_header, kong.service.request.set_headers (identity headers,
//            key removed with an empty array), kong.ctx.shared.set("authenticated_groups")
//   no key:  kong.request.get_header, kong.response.exit(401, problem+json)
// Loaded by `kong-js-pluginserver --plugins-directory bench/js/plugins`.

const IDENTITY = {
  'X-Account-Id': 'acc_bench_0001',
  'X-User-Id': 'usr_bench_0001',
  'X-Consumer-Username': 'acc_bench_0001',
  'X-Credential-Identifier': 'key_hit_0',
  'x-api-key': [],
}
const GROUPS = ['ghasi-authenticated']
const DENIED_BODY = '{"type":"about:blank","title":"Unauthorized","status":401,' +
  '"code":"credential_missing","detail":"No API key was presented."}'
const DENIED_HEADERS = { 'Content-Type': 'application/problem+json', 'WWW-Authenticate': 'ApiKey' }

class Plugin {
  constructor (config) {
    this.config = config
  }

  async access (kong) {
    const key = await kong.request.getHeader('x-api-key')
    if (!key) {
      await kong.response.exit(401, DENIED_BODY, DENIED_HEADERS)
      return
    }
    await kong.service.request.setHeaders(IDENTITY)
    await kong.ctx.shared.set('authenticated_groups', GROUPS)
  }
}

module.exports = {
  Plugin,
  Name: 'ghasi-bench-minimal',
  Version: '0.1.0',
  Priority: 1250,
  Schema: [],
}
