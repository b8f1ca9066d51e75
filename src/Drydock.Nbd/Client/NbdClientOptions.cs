using System.Security.Cryptography.X509Certificates;
using Microsoft.Extensions.Logging;
using Microsoft.Extensions.Logging.Abstractions;

namespace Drydock.Nbd.Client;

/// <summary>Settings of an <see cref="NbdClient"/>.</summary>
public sealed class NbdClientOptions
{
    /// <summary>Time allowed to connect and negotiate one connection. Default: 30 seconds.</summary>
    public TimeSpan ConnectTimeout { get; set; } = TimeSpan.FromSeconds(30);

    /// <summary>
    /// Time a request may wait for its reply. A server that does not answer in time is declared dead:
    /// the connection is closed and every request on it fails. Default: 60 seconds;
    /// <see cref="Timeout.InfiniteTimeSpan"/> disables it.
    /// </summary>
    public TimeSpan RequestTimeout { get; set; } = TimeSpan.FromSeconds(60);

    /// <summary>Most requests in flight on one connection. Default: 16.</summary>
    public int MaxRequestsInFlight { get; set; } = 16;

    /// <summary>Most payload bytes (read and write) in flight on one connection. Default: 64 MiB.</summary>
    public long MaxBytesInFlight { get; set; } = 64L * 1024 * 1024;

    /// <summary>
    /// Connections to open. More than one is used only when the server advertises
    /// NBD_FLAG_CAN_MULTI_CONN; otherwise one connection is used. Default: 1.
    /// </summary>
    public int Connections { get; set; } = 1;

    /// <summary>
    /// Metadata contexts to negotiate, for example <c>base:allocation</c> or <c>qemu:dirty-bitmap:NAME</c>.
    /// A context the server does not offer is simply absent from <see cref="NbdExportInfo.MetaContexts"/>:
    /// a caller that needs it must check (for a dirty bitmap, absence means "no changed-block tracking",
    /// never "nothing changed"). Default: none.
    /// </summary>
    public IList<string> MetaContexts { get; } = [];

    /// <summary>Whether to negotiate structured replies. Required for block status. Default: true.</summary>
    public bool StructuredReplies { get; set; } = true;

    /// <summary>
    /// Export size the caller expects (for example, the size the hypervisor reports for the disk).
    /// When set, a different size fails the connection. Default: not checked.
    /// </summary>
    public ulong? ExpectedSize { get; set; }

    /// <summary>Largest option reply payload accepted during negotiation. Default: 64 KiB.</summary>
    public int MaxOptionReplyLength { get; set; } = 64 * 1024;

    /// <summary>Most option replies accepted for one option (LIST, meta contexts). Default: 10,000.</summary>
    public int MaxOptionReplies { get; set; } = 10_000;

    /// <summary>Largest block-status chunk payload accepted. Default: 8 MiB (about one million extents).</summary>
    public int MaxBlockStatusPayload { get; set; } = 8 * 1024 * 1024;

    /// <summary>Size of the receive buffer for headers and small payloads. Default: 64 KiB.</summary>
    public int ReceiveBufferSize { get; set; } = 64 * 1024;

    /// <summary>
    /// Run the caller's continuation of a completed request on the connection's reader thread instead of the
    /// thread pool: a completed READ turns into the next request without a thread hand-off (nbdcopy's model).
    /// Only for callers whose continuations never block (no sync-over-async, no long computation); sends with
    /// a payload from the reader thread are moved to the thread pool automatically. Default: false.
    /// </summary>
    public bool InlineCompletions { get; set; }

    /// <summary>TLS settings. When null, they come from the URI (or TLS is not used).</summary>
    public NbdTlsOptions? Tls { get; set; }

    /// <summary>Clock for timeouts. Default: <see cref="TimeProvider.System"/>.</summary>
    public TimeProvider TimeProvider { get; set; } = TimeProvider.System;

    /// <summary>Logging. Default: no logging.</summary>
    public ILoggerFactory LoggerFactory { get; set; } = NullLoggerFactory.Instance;

    /// <summary>Checks the settings.</summary>
    /// <exception cref="ArgumentOutOfRangeException">A setting is out of range.</exception>
    public void Validate()
    {
        ArgumentOutOfRangeException.ThrowIfLessThan(MaxRequestsInFlight, 1, nameof(MaxRequestsInFlight));
        ArgumentOutOfRangeException.ThrowIfLessThan(MaxBytesInFlight, 4096, nameof(MaxBytesInFlight));
        ArgumentOutOfRangeException.ThrowIfLessThan(Connections, 1, nameof(Connections));
        ArgumentOutOfRangeException.ThrowIfGreaterThan(Connections, 64, nameof(Connections));
        ArgumentOutOfRangeException.ThrowIfLessThan(MaxOptionReplyLength, 4096 + 64, nameof(MaxOptionReplyLength));
        ArgumentOutOfRangeException.ThrowIfLessThan(MaxBlockStatusPayload, 12, nameof(MaxBlockStatusPayload));
        ArgumentOutOfRangeException.ThrowIfLessThan(ReceiveBufferSize, 4096, nameof(ReceiveBufferSize));
        if (ConnectTimeout <= TimeSpan.Zero && ConnectTimeout != Timeout.InfiniteTimeSpan)
        {
            throw new ArgumentOutOfRangeException(nameof(ConnectTimeout), ConnectTimeout, "must be positive or infinite");
        }

        if (RequestTimeout <= TimeSpan.Zero && RequestTimeout != Timeout.InfiniteTimeSpan)
        {
            throw new ArgumentOutOfRangeException(nameof(RequestTimeout), RequestTimeout, "must be positive or infinite");
        }
    }
}

/// <summary>TLS settings (x509 certificates). There is never a plaintext fallback when TLS is required.</summary>
public sealed class NbdTlsOptions
{
    /// <summary>Whether TLS must be negotiated (STARTTLS). Default: true.</summary>
    public bool Required { get; set; } = true;

    /// <summary>
    /// Directory with PEM files in the layout QEMU and libnbd use: <c>ca-cert.pem</c> (trusted CA),
    /// and optionally <c>client-cert.pem</c> + <c>client-key.pem</c>. Default: none (system trust store).
    /// </summary>
    public string? CertificatesDirectory { get; set; }

    /// <summary>Extra trusted root certificates (a private CA). Default: none.</summary>
    public X509Certificate2Collection? TrustedRoots { get; set; }

    /// <summary>Client certificate with its private key, when the server verifies clients. Default: none.</summary>
    public X509Certificate2? ClientCertificate { get; set; }

    /// <summary>Whether to verify the server's certificate and name. Default: true.</summary>
    public bool VerifyPeer { get; set; } = true;

    /// <summary>Name expected in the server certificate. Default: the URI's host; none for Unix sockets.</summary>
    public string? HostName { get; set; }
}
