using Microsoft.Extensions.Logging;
using Microsoft.Extensions.Logging.Abstractions;

namespace Drydock.Hypervisor.Qemu;

/// <summary>Settings of a <see cref="QemuDriver"/>.</summary>
public sealed class QemuDriverOptions
{
    /// <summary>The host name reported in domains and events. Default: the machine name.</summary>
    public string HostName { get; set; } = Environment.MachineName;

    /// <summary>The domains (QEMU or qemu-storage-daemon instances) this driver manages.</summary>
    public IList<QemuDomainOptions> Domains { get; } = [];

    /// <summary>How long a QMP command may take. Default 60 s.</summary>
    public TimeSpan CommandTimeout { get; set; } = TimeSpan.FromSeconds(60);

    /// <summary>How long connecting to a monitor may take. Default 5 s.</summary>
    public TimeSpan ConnectTimeout { get; set; } = TimeSpan.FromSeconds(5);

    /// <summary>
    /// The copy-before-write filter's <c>cbw-timeout</c>: how long a guest write may wait for its copy to the fleece
    /// before the snapshot is broken (the guest write then proceeds). Default 30 s.
    /// </summary>
    public TimeSpan CbwTimeout { get; set; } = TimeSpan.FromSeconds(30);

    /// <summary>
    /// How long <see cref="IHypervisorDriver.DestroyAsync"/> waits after SIGTERM (a clean close stores the bitmaps)
    /// before SIGKILL. Default 10 s.
    /// </summary>
    public TimeSpan DestroyGracePeriod { get; set; } = TimeSpan.FromSeconds(10);

    /// <summary>How long a launched qemu-storage-daemon may take to become ready. Default 30 s.</summary>
    public TimeSpan LaunchTimeout { get; set; } = TimeSpan.FromSeconds(30);

    /// <summary>The clock. Default <see cref="TimeProvider.System"/>.</summary>
    public TimeProvider TimeProvider { get; set; } = TimeProvider.System;

    /// <summary>Logging. Default: none.</summary>
    public ILoggerFactory LoggerFactory { get; set; } = NullLoggerFactory.Instance;
}

/// <summary>
/// One domain of the QEMU driver: a QEMU or qemu-storage-daemon instance reached through its QMP monitor, with its
/// disks named by block nodes. Each disk is a <b>format node</b> (qcow2 holds the persistent bitmaps) under a
/// <b>front node</b> (<c>driver=raw</c>, <c>file=</c> the format node) to which every writer — the guest's device or
/// export — is attached. A capture re-points the front node onto a copy-before-write filter; a writer attached to
/// the format node directly would bypass it, so the driver refuses to capture while one exists.
/// </summary>
public sealed class QemuDomainOptions
{
    /// <summary>Stable identifier (a UUID is best). Letters, digits, '-', '_' and '.' only.</summary>
    public required string Id { get; set; }

    /// <summary>Display name. Default: <see cref="Id"/>.</summary>
    public string? Name { get; set; }

    /// <summary>The QMP monitor's Unix socket.</summary>
    public required string QmpSocketPath { get; set; }

    /// <summary>
    /// The Unix socket of the instance's NBD server, where capture and restore exports are served. The driver starts
    /// the server there (<c>nbd-server-start</c>) if none runs; if one already runs, it must listen here.
    /// </summary>
    public required string NbdSocketPath { get; set; }

    /// <summary>Directory for fleece files, as the instance sees it (it creates them). Must be private to this domain.</summary>
    public required string FleeceDirectory { get; set; }

    /// <summary>
    /// The instance's pid file. Optional; with it the driver reaches the instance's files through
    /// <c>/proc/PID/root</c> (right even when it runs in another mount namespace), tells a crash from a stop, and can
    /// destroy an instance it did not launch.
    /// </summary>
    public string? PidFile { get; set; }

    /// <summary>The disks, in a stable order.</summary>
    public IList<QemuDiskOptions> Disks { get; } = [];

    /// <summary>
    /// When set, the driver launches and destroys the instance as a qemu-storage-daemon (<see cref="IHypervisorDriver.StartAsync"/>);
    /// otherwise it only attaches to a running instance.
    /// </summary>
    public QemuLaunchOptions? Launch { get; set; }
}

/// <summary>One disk of a <see cref="QemuDomainOptions"/>.</summary>
public sealed class QemuDiskOptions
{
    /// <summary>The target name (like libvirt's <c>vda</c>). Letters, digits, '-', '_' and '.' only.</summary>
    public required string Target { get; set; }

    /// <summary>The format node (qcow2 or raw) that holds the data and, for qcow2, the bitmaps.</summary>
    public required string NodeName { get; set; }

    /// <summary>The front node (<c>driver=raw</c> over <see cref="NodeName"/>) every writer is attached to.</summary>
    public required string FrontNodeName { get; set; }

    /// <summary>The image file, for launching (<see cref="QemuDomainOptions.Launch"/>).</summary>
    public string? ImagePath { get; set; }

    /// <summary>The image format, for launching. Default qcow2.</summary>
    public string Format { get; set; } = DiskFormats.Qcow2;

    /// <summary>
    /// For launched instances: the writable NBD export the guest uses, served on the front node while the domain
    /// runs (removed while paused). Null: none.
    /// </summary>
    public string? GuestExportName { get; set; }

    /// <summary>
    /// Whether the front node was opened with <c>discard=unmap</c> (guest trims reach the image). Reopening a node
    /// resets what is not given, so this must match; the capture filter gets the same. Default true (as launched).
    /// </summary>
    public bool Discard { get; set; } = true;
}

/// <summary>How the driver launches a qemu-storage-daemon for a domain.</summary>
public sealed class QemuLaunchOptions
{
    /// <summary>The program. Default <c>qemu-storage-daemon</c> (Debian package qemu-system-common).</summary>
    public string Executable { get; set; } = "qemu-storage-daemon";

    /// <summary>More arguments, appended.</summary>
    public IList<string> ExtraArguments { get; } = [];
}
