namespace Drydock.Hypervisor.Virtuozzo;

/// <summary>Options of <see cref="VirtuozzoDriver"/> and <see cref="NativeVirtuozzoBackupApi"/>.</summary>
public sealed class VirtuozzoDriverOptions
{
    /// <summary>The libvirt URI of the Virtuozzo Hybrid Server host (its QEMU VMs). Default <c>qemu:///system</c>.</summary>
    public string Uri { get; set; } = "qemu:///system";

    /// <summary>The host name reported by the driver; default libvirt's host name.</summary>
    public string? HostName { get; set; }

    /// <summary>Where fleece images are created, one per captured disk (<c>SNAPSHOT.TARGET.qcow2</c>). Default <c>/var/lib/drydock/fleece</c>.</summary>
    public string FleeceDirectory { get; set; } = "/var/lib/drydock/fleece";

    /// <summary>The address QEMU's NBD server listens on (<c>&lt;address type='ip' host&gt;</c>). Default <c>127.0.0.1</c>.</summary>
    public string ExportHost { get; set; } = "127.0.0.1";

    /// <summary>The port of the NBD server (<c>port</c>). Default 10809.</summary>
    public int ExportPort { get; set; } = 10809;

    /// <summary>Require TLS on exports (<c>tls='yes'</c>). Default false.</summary>
    public bool ExportTls { get; set; }

    /// <summary>The client certificates directory written into TLS endpoints. Default null.</summary>
    public string? TlsClientCertificatesDirectory { get; set; }

    /// <summary>
    /// The <c>virDomainBlockSnapshotXCreateFlags</c> bit that also creates a checkpoint named after the snapshot. Not
    /// documented in what could be read (docs/HYPERVISORS.md): default 1, configurable for the host's libvirt.
    /// </summary>
    public uint CreateCheckpointFlag { get; set; } = 1;

    /// <summary>Bitmap granularity reported for changed-block contexts when the host does not say. Default 65536.</summary>
    public long DefaultGranularity { get; set; } = 65536;
}
