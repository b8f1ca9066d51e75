namespace Drydock.Hypervisor.Libvirt;

/// <summary>How pull-mode captures serve NBD.</summary>
public enum LibvirtExportTransport
{
    /// <summary>A Unix socket per capture in <see cref="LibvirtDriverOptions.SocketDirectory"/> (the default: NBD stays on the host).</summary>
    Unix = 0,

    /// <summary>TCP on <see cref="LibvirtDriverOptions.TcpHost"/>, a port per capture; TLS when <see cref="LibvirtDriverOptions.TcpTls"/>.</summary>
    Tcp = 1,
}

/// <summary>Options of <see cref="LibvirtDriver"/>.</summary>
public sealed class LibvirtDriverOptions
{
    /// <summary>The libvirt connection URI. Default <c>qemu:///system</c>.</summary>
    public string Uri { get; set; } = "qemu:///system";

    /// <summary>
    /// The host name reported in <see cref="IHypervisorDriver.HostName"/> and events. Default null: libvirt's
    /// <c>virConnectGetHostname</c>.
    /// </summary>
    public string? HostName { get; set; }

    /// <summary>
    /// Where pull-mode NBD sockets are created, one per capture (<c>CAPTURE-ID.sock</c>). QEMU creates the socket, so the
    /// directory must be writable by QEMU's user: the driver creates it (mode 0750) when it connects and, running as root,
    /// gives it to <see cref="QemuUser"/> (what <c>install -d -o libvirt-qemu -m 0750 DIR</c> does on Debian). Its parents
    /// must be searchable by that user. Default <c>/var/lib/drydock/nbd</c>. Keep it short: a socket path is limited
    /// to 107 bytes.
    /// </summary>
    public string SocketDirectory { get; set; } = "/var/lib/drydock/nbd";

    /// <summary>
    /// Where pull-mode scratch files (the copy-before-write targets) are created, one per captured disk
    /// (<c>CAPTURE-ID.TARGET.qcow2</c>). libvirt creates and labels them; the driver creates the directory (mode 0755)
    /// when it connects. Default <c>/var/lib/drydock/scratch</c>.
    /// </summary>
    public string ScratchDirectory { get; set; } = "/var/lib/drydock/scratch";

    /// <summary>
    /// The user libvirt runs QEMU as (<c>user</c> in qemu.conf), who must own <see cref="SocketDirectory"/>. Only used
    /// when Drydock runs as root (with <c>qemu:///session</c> QEMU runs as Drydock's own user). Default null: the
    /// first of <c>libvirt-qemu</c> (Debian, Ubuntu) and <c>qemu</c> (Fedora, RHEL, SUSE) that exists on the host.
    /// </summary>
    public string? QemuUser { get; set; }

    /// <summary>How captures are served. Default <see cref="LibvirtExportTransport.Unix"/>.</summary>
    public LibvirtExportTransport ExportTransport { get; set; } = LibvirtExportTransport.Unix;

    /// <summary>The address QEMU listens on for TCP captures. Default <c>127.0.0.1</c>.</summary>
    public string TcpHost { get; set; } = "127.0.0.1";

    /// <summary>First port of the range TCP captures use (one per running capture). Default 10810.</summary>
    public int TcpPortStart { get; set; } = 10810;

    /// <summary>Number of ports in the range. Default 100.</summary>
    public int TcpPortCount { get; set; } = 100;

    /// <summary>
    /// Require TLS on TCP captures (<c>&lt;server tls='yes'&gt;</c>; QEMU uses libvirt's <c>backup_tls_x509_cert_dir</c>
    /// from qemu.conf). Default false.
    /// </summary>
    public bool TcpTls { get; set; }

    /// <summary>
    /// The client certificates directory written into TLS endpoints (<c>tls-certificates</c>): <c>ca-cert.pem</c> (the CA
    /// of libvirt's server certificate) and, because libvirt's <c>backup_tls_x509_verify</c> defaults to 1,
    /// <c>client-cert.pem</c> + <c>client-key.pem</c>. Default null (the system trust store, no client certificate).
    /// </summary>
    public string? TlsClientCertificatesDirectory { get; set; }

    /// <summary>Threads that make blocking libvirt calls. Default 4.</summary>
    public int WorkerThreads { get; set; } = 4;

    /// <summary>Keep-alive probe interval in seconds (0 disables). Default 5.</summary>
    public int KeepAliveIntervalSeconds { get; set; } = 5;

    /// <summary>Unanswered keep-alive probes before libvirt closes the connection. Default 3.</summary>
    public uint KeepAliveCount { get; set; } = 3;

    /// <summary>
    /// How long a call waits for libvirtd to answer again after the connection was lost (F20: the daemon restarted) before
    /// it fails with <see cref="HypervisorConnectionException"/>. The driver reconnects in the background as well, for
    /// as long as it lives. Default 60 s.
    /// </summary>
    public TimeSpan ReconnectTimeout { get; set; } = TimeSpan.FromSeconds(60);

    /// <summary>
    /// Read dirty-bitmap state of running domains through the QEMU monitor pass-through (libvirt-qemu.so.0,
    /// <c>query-named-block-nodes</c>). Without it the driver relies on libvirt's own check at backup-begin. Default true.
    /// </summary>
    public bool UseQemuMonitorForBitmaps { get; set; } = true;

    /// <summary>The <c>qemu-img</c> program (bitmap state and removal on shut-off domains). Default <c>qemu-img</c>.</summary>
    public string QemuImgPath { get; set; } = "qemu-img";

    /// <summary>The <c>qemu-nbd</c> program (restore exports of shut-off domains). Default <c>qemu-nbd</c>.</summary>
    public string QemuNbdPath { get; set; } = "qemu-nbd";

    /// <summary>How long a push backup may run before it is aborted. Default 6 hours.</summary>
    public TimeSpan PushTimeout { get; set; } = TimeSpan.FromHours(6);

    /// <summary>How long a restore export's qemu-nbd may take to listen. Default 30 s.</summary>
    public TimeSpan RestoreExportStartTimeout { get; set; } = TimeSpan.FromSeconds(30);
}
