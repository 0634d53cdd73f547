// oidc-provider as the peer a gateway would otherwise ask per call: an authorization server
// that issues a client_credentials access token and answers RFC 7662 introspection for it.
// Usage: node server.mjs PORT. Prints "ready" once listening. In-memory storage (its default
// adapter), no interactions: only the token and introspection endpoints are used.
import Provider from 'oidc-provider';

const port = Number(process.argv[2] ?? 0);
const issuer = `http://127.0.0.1:${port}`;
const provider = new Provider(issuer, {
  clients: [
    {
      client_id: 'agent',
      client_secret: 'agent-secret-0123456789abcdef',
      grant_types: ['client_credentials'],
      redirect_uris: [],
      response_types: [],
      scope: 'crm:read',
    },
    {
      client_id: 'gateway',
      client_secret: 'gateway-secret-0123456789abcdef',
      grant_types: ['client_credentials'],
      redirect_uris: [],
      response_types: [],
    },
  ],
  scopes: ['crm:read'],
  features: {
    clientCredentials: { enabled: true },
    introspection: { enabled: true },
    devInteractions: { enabled: false },
  },
  ttl: { ClientCredentials: 3600 },
});
provider.proxy = false;
const server = provider.listen(port, '127.0.0.1', () => {
  console.log('ready');
});
process.on('SIGTERM', () => server.close(() => process.exit(0)));
