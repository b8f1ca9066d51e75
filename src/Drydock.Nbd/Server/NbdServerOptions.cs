using System.Security.Cryptography.X509Certificates;
using Microsoft.Extensions.Logging;
using Microsoft.Extensions.Logging.Abstractions;

namespace Drydock.Nbd.Server;

/// <summary>Settings of an <see cref="NbdServer"/>.</summary>
public sealed class NbdServerOptions
{
    /// <summary>
    /// Server certificate with its private key. When set, NBD_OPT_STARTTLS is offered; when null it is
    /// answered with NBD_REP_ERR_POLICY. Default: none.
    /// </summary>
    public X509Certificate2? Certificate { get; set; }

    /// <summary>
    /// Whether TLS is mandatory (the specification's FORCEDTLS mode): before STARTTLS every option other
    /// than NBD_OPT_ABORT is answered NBD_REP_ERR_TLS_REQD, and NBD_OPT_EXPORT_NAME closes the connection.
    /// Needs <see cref="Certificate"/>. Default: false.
    /// </summary>
    public bool RequireTls { get; set; }

    /// <summary>Whether clients must present a certificate that chains to <see cref="TrustedClientRoots"/>. Default: false.</summary>
    public bool RequireClientCertificate { get; set; }

    /// <summary>Certificate authorities client certificates must chain to. Default: none (the system store).</summary>
    public X509Certificate2Collection? TrustedClientRoots { get; set; }

    /// <summary>Largest option payload accepted; a client that announces more is disconnected. Default: 64 KiB.</summary>
    public int MaxOptionLength { get; set; } = 64 * 1024;

    /// <summary>Most options one connection may send before entering transmission. Default: 256.</summary>
    public int MaxOptions { get; set; } = 256;

    /// <summary>Most queries in one meta-context option; more get NBD_REP_ERR_TOO_BIG. Default: 128.</summary>
    public int MaxMetaContextQueries { get; set; } = 128;

    /// <summary>Most requests processed at once on one connection (replies may come out of order). Default: 16.</summary>
    public int MaxRequestsInFlight { get; set; } = 16;

    /// <summary>Most READ and WRITE payload bytes held at once for one connection. Default: 128 MiB.</summary>
    public long MaxBytesInFlight { get; set; } = 128L * 1024 * 1024;

    /// <summary>
    /// Largest WRITE payload read at all: a longer WRITE is treated as an attack and the client disconnected
    /// (WRITEs above the export's maximum block size but within this cap are read, discarded and failed with
    /// EINVAL). Default: 32 MiB, which the specification says must not be deemed an attack.
    /// </summary>
    public int MaxWritePayload { get; set; } = 32 * 1024 * 1024;

    /// <summary>Most extents in one NBD_REPLY_TYPE_BLOCK_STATUS chunk (the client asks again for the rest). Default: 65,536.</summary>
    public int MaxBlockStatusExtents { get; set; } = 65_536;

    /// <summary>Time a client has from connecting to entering transmission. Default: 30 seconds.</summary>
    public TimeSpan HandshakeTimeout { get; set; } = TimeSpan.FromSeconds(30);

    /// <summary>Most connections at once; more are closed on accept. Default: 1,024.</summary>
    public int MaxConnections { get; set; } = 1024;

    /// <summary>Faults to inject, for tests of clients. Default: none.</summary>
    public NbdFaultPlan? Faults { get; set; }

    /// <summary>Clock for timeouts and injected delays. Default: <see cref="TimeProvider.System"/>.</summary>
    public TimeProvider TimeProvider { get; set; } = TimeProvider.System;

    /// <summary>Logging. Default: no logging.</summary>
    public ILoggerFactory LoggerFactory { get; set; } = NullLoggerFactory.Instance;

    /// <summary>Checks the settings.</summary>
    /// <exception cref="ArgumentOutOfRangeException">A limit is out of range.</exception>
    /// <exception cref="ArgumentException">TLS is required without a certificate.</exception>
    public void Validate()
    {
        ArgumentOutOfRangeException.ThrowIfLessThan(MaxOptionLength, 4096 + 64, nameof(MaxOptionLength));
        ArgumentOutOfRangeException.ThrowIfLessThan(MaxOptions, 1, nameof(MaxOptions));
        ArgumentOutOfRangeException.ThrowIfLessThan(MaxMetaContextQueries, 1, nameof(MaxMetaContextQueries));
        ArgumentOutOfRangeException.ThrowIfLessThan(MaxRequestsInFlight, 1, nameof(MaxRequestsInFlight));
        ArgumentOutOfRangeException.ThrowIfLessThan(MaxBytesInFlight, 4096, nameof(MaxBytesInFlight));
        ArgumentOutOfRangeException.ThrowIfLessThan(MaxWritePayload, 4096, nameof(MaxWritePayload));
        ArgumentOutOfRangeException.ThrowIfLessThan(MaxBlockStatusExtents, 1, nameof(MaxBlockStatusExtents));
        ArgumentOutOfRangeException.ThrowIfLessThan(MaxConnections, 1, nameof(MaxConnections));
        if (HandshakeTimeout <= TimeSpan.Zero && HandshakeTimeout != Timeout.InfiniteTimeSpan)
        {
            throw new ArgumentOutOfRangeException(nameof(HandshakeTimeout), HandshakeTimeout, "must be positive or infinite");
        }

        if (RequireTls && Certificate is null)
        {
            throw new ArgumentException("RequireTls needs a server Certificate", nameof(RequireTls));
        }

        if (RequireClientCertificate && Certificate is null)
        {
            throw new ArgumentException("RequireClientCertificate needs a server Certificate (client certificates are checked in TLS)", nameof(RequireClientCertificate));
        }
    }
}
