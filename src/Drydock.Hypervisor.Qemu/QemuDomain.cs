using System.Collections.Concurrent;
using System.Globalization;
using Drydock.Hypervisor.Qemu.Interop;
using Drydock.Hypervisor.Qemu.Qmp;

namespace Drydock.Hypervisor.Qemu;

/// <summary>The driver's runtime state of one domain.</summary>
internal sealed class QemuDomain(QemuDomainOptions options)
{
    public QemuDomainOptions Options { get; } = options;

    public string Id => Options.Id;

    public string Name => Options.Name ?? Options.Id;

    /// <summary>The pid file: configured, or next to the QMP socket for launched instances.</summary>
    public string? PidFile => Options.PidFile ?? (Options.Launch is null ? null : Options.QmpSocketPath + ".pid");

    /// <summary>Serialises graph changes (captures, checkpoints, exports, lifecycle) on this domain.</summary>
    public SemaphoreSlim Lock { get; } = new(1, 1);

    /// <summary>Serialises connecting.</summary>
    public SemaphoreSlim ConnectLock { get; } = new(1, 1);

    public QmpClient? Qmp { get; set; }

    /// <summary>The connection on which the NBD server was last seen running (a new instance needs it again).</summary>
    public QmpClient? NbdServerCheckedOn { get; set; }

    /// <summary>Captures this driver instance started and has not released (changed under <see cref="Lock"/>, read anywhere).</summary>
    public ConcurrentDictionary<string, QemuCapture> Captures { get; } = new(StringComparer.Ordinal);

    /// <summary>Set while the driver destroys the domain, so that its end is reported as a stop, not a crash.</summary>
    public bool DestroyRequested { get; set; }

    public int IndexOf(string target)
    {
        for (var i = 0; i < Options.Disks.Count; i++)
        {
            if (string.Equals(Options.Disks[i].Target, target, StringComparison.Ordinal))
            {
                return i;
            }
        }

        return -1;
    }

    /// <summary>The pid in the pid file, when the file exists and the process is alive.</summary>
    public int? LivePid()
    {
        if (PidFile is null)
        {
            return null;
        }

        try
        {
            var text = File.ReadAllText(PidFile).Trim();
            return int.TryParse(text, NumberStyles.None, CultureInfo.InvariantCulture, out var pid) && pid > 0 && NativeMethods.Kill(pid, 0) == 0
                ? pid
                : null;
        }
        catch (Exception ex) when (ex is IOException or UnauthorizedAccessException)
        {
            return null;
        }
    }

    /// <summary>Whether the pid file names a process that is gone (QEMU removes it on a clean exit, not when killed).</summary>
    public bool PidFileIsStale()
    {
        if (PidFile is null || !File.Exists(PidFile))
        {
            return false;
        }

        return LivePid() is null;
    }

    /// <summary>
    /// A path as the instance sees it, made reachable from this process: through <c>/proc/PID/root</c> when the pid is
    /// known (right even in another mount namespace), else unchanged.
    /// </summary>
    public string HostPath(string path)
    {
        if (LivePid() is { } pid && Path.IsPathRooted(path))
        {
            var viaProc = string.Create(CultureInfo.InvariantCulture, $"/proc/{pid}/root{path}");
            if (Directory.Exists(string.Create(CultureInfo.InvariantCulture, $"/proc/{pid}/root/")))
            {
                return viaProc;
            }
        }

        return path;
    }
}

/// <summary>One capture's artefacts, per disk.</summary>
internal sealed record QemuCapture(string Id, string DomainId, DateTimeOffset CapturedAt, string? NewCheckpoint, IReadOnlyList<QemuCaptureDisk> Disks);

/// <summary>One disk of a capture.</summary>
internal sealed record QemuCaptureDisk(int Index, string Target, string FleecePath, bool InNewCheckpoint, string? TempBitmap);
