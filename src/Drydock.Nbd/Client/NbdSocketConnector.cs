using System.Net;
using System.Net.Sockets;

namespace Drydock.Nbd.Client;

/// <summary>
/// Opens sockets for NBD URIs (TCP or Unix domain) and derives TLS settings from them. Sockets are
/// connected with the blocking call (on a worker thread, aborted by disposing the socket) so they stay in
/// blocking mode: .NET switches a socket to non-blocking for good at its first asynchronous operation,
/// after which blocking reads are emulated through epoll and events at several times the CPU cost.
/// </summary>
public static class NbdSocketConnector
{
    /// <summary>A stream factory that connects to where <paramref name="uri"/> points.</summary>
    /// <param name="uri">The NBD URI.</param>
    /// <returns>The factory.</returns>
    public static NbdStreamFactory Create(NbdUri uri) => uri.Transport switch
    {
        NbdTransport.Unix => ct => ConnectUnixAsync(uri.SocketPath!, ct),
        _ => ct => ConnectTcpAsync(uri.Host!, uri.Port, ct),
    };

    /// <summary>Connects to a Unix domain socket.</summary>
    /// <param name="path">Socket path (a leading NUL names the abstract namespace).</param>
    /// <param name="cancellationToken">Cancels connecting.</param>
    /// <returns>The connected stream.</returns>
    public static async ValueTask<Stream> ConnectUnixAsync(string path, CancellationToken cancellationToken = default)
    {
        try
        {
            return await ConnectSocketAsync(AddressFamily.Unix, ProtocolType.Unspecified, new UnixDomainSocketEndPoint(path), cancellationToken);
        }
        catch (SocketException e)
        {
            var reason = !path.StartsWith('\0') && !File.Exists(path) ? "no such socket" : e.Message;
            throw new NbdConnectionException($"cannot connect to NBD socket {path.Replace("\0", "@", StringComparison.Ordinal)}: {reason}", e);
        }
    }

    /// <summary>Connects over TCP (Nagle off: requests are small and latency-bound).</summary>
    /// <param name="host">Host name or address.</param>
    /// <param name="port">Port.</param>
    /// <param name="cancellationToken">Cancels connecting.</param>
    /// <returns>The connected stream.</returns>
    public static async ValueTask<Stream> ConnectTcpAsync(string host, int port, CancellationToken cancellationToken = default)
    {
        var addresses = IPAddress.TryParse(host, out var literal)
            ? [literal]
            : await Dns.GetHostAddressesAsync(host, cancellationToken);
        SocketException? last = null;
        foreach (var address in addresses)
        {
            try
            {
                return await ConnectSocketAsync(address.AddressFamily, ProtocolType.Tcp, new IPEndPoint(address, port), cancellationToken);
            }
            catch (SocketException e)
            {
                last = e;
            }
        }

        throw new NbdConnectionException($"cannot connect to NBD server {host}:{port}: {last?.Message ?? "no address"}", last);
    }

    private static async Task<Stream> ConnectSocketAsync(AddressFamily family, ProtocolType protocol, EndPoint endpoint, CancellationToken cancellationToken)
    {
        Socket? socket = new Socket(family, SocketType.Stream, protocol);
        try
        {
            if (protocol == ProtocolType.Tcp)
            {
                socket.NoDelay = true; // requests are small and latency-bound
            }

            await ConnectBlockingAsync(socket, endpoint, cancellationToken);
            var stream = new NetworkStream(socket, ownsSocket: true);
            socket = null;
            return stream;
        }
        finally
        {
            socket?.Dispose();
        }
    }

    private static async Task ConnectBlockingAsync(Socket socket, EndPoint endpoint, CancellationToken cancellationToken)
    {
        cancellationToken.ThrowIfCancellationRequested();
        await using (cancellationToken.UnsafeRegister(static s => ((Socket)s!).Dispose(), socket))
        {
            try
            {
                await Task.Run(() => socket.Connect(endpoint), CancellationToken.None);
            }
            catch (ObjectDisposedException) when (cancellationToken.IsCancellationRequested)
            {
                cancellationToken.ThrowIfCancellationRequested();
            }
        }
    }

    /// <summary>TLS settings a URI asks for, or null when it does not require TLS.</summary>
    /// <param name="uri">The NBD URI.</param>
    /// <returns>The settings.</returns>
    /// <exception cref="NbdTlsException">The URI asks for a kind of TLS this client cannot do (PSK, anonymous).</exception>
    public static NbdTlsOptions? TlsFromUri(NbdUri uri)
    {
        if (!uri.TlsRequired)
        {
            return null;
        }

        if (uri.TlsType is NbdTlsType.Psk || uri.TlsPskFile is not null)
        {
            throw new NbdTlsException("TLS with pre-shared keys (tls-psk-file) is not supported by Drydock; use x509 certificates (tls-certificates)");
        }

        if (uri.TlsType is NbdTlsType.Anonymous)
        {
            throw new NbdTlsException("anonymous TLS (tls-type=anon) is not supported: it authenticates nobody; use x509 certificates");
        }

        return new NbdTlsOptions
        {
            Required = true,
            CertificatesDirectory = uri.TlsCertificates,
            VerifyPeer = uri.TlsVerifyPeer,
            HostName = uri.TlsHostname,
        };
    }

    /// <summary>The name to verify in the server certificate: tls-hostname, else the TCP host; none for Unix sockets.</summary>
    /// <param name="uri">The NBD URI.</param>
    /// <param name="tls">The TLS settings in use.</param>
    /// <returns>The host name, or null.</returns>
    public static string? HostNameFor(NbdUri uri, NbdTlsOptions? tls)
        => tls?.HostName ?? (uri.Transport == NbdTransport.Tcp ? uri.Host : null);
}
