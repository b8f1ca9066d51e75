using System.Globalization;
using System.Net.Sockets;
using System.Runtime.InteropServices;

namespace Drydock.TestKit.Libvirt;

/// <summary>
/// The system libvirtd (with its virtlogd) for tests, started as root the way ../shared/REAL-STACK.md describes:
/// <c>virtlogd -d -p PIDFILE</c>, <c>libvirtd -d -p PIDFILE</c>, wait for <c>/run/libvirt/libvirt-sock</c>, then one
/// <c>virsh version</c> to pay the first-call capability probe (~8 s) once. Only one libvirtd can run on a machine:
/// when one already answers, it is used and left running (unless its configuration changed: see
/// <see cref="StartAsync(bool, CancellationToken)"/>); a daemon this type started is stopped by PID on dispose.
/// </summary>
public sealed class LibvirtDaemon : IAsyncDisposable
{
    /// <summary>The connection URI tests use.</summary>
    public const string Uri = "qemu:///system";

    /// <summary>libvirtd's read-write socket.</summary>
    public const string SocketPath = "/run/libvirt/libvirt-sock";

    /// <summary>virtlogd's socket: QEMU's console and log go through it, so no domain starts without it.</summary>
    public const string VirtlogdSocketPath = "/run/libvirt/virtlogd-sock";

    private readonly TestDirectory _directory;
    private int? _libvirtdPid;
    private readonly int? _virtlogdPid;

    private LibvirtDaemon(TestDirectory directory, int? libvirtdPid, int? virtlogdPid)
    {
        _directory = directory;
        _libvirtdPid = libvirtdPid;
        _virtlogdPid = virtlogdPid;
    }

    /// <summary>Whether this instance started libvirtd (and will stop it).</summary>
    public bool Owned => _libvirtdPid is not null;

    /// <summary>Starts virtlogd and libvirtd unless a libvirtd already answers, and warms libvirt's capability cache.</summary>
    /// <exception cref="ToolNotFoundException">libvirt is not installed (Debian packages libvirt-daemon-system, libvirt-clients).</exception>
    /// <exception cref="ServiceStartException">libvirtd did not come up.</exception>
    public static Task<LibvirtDaemon> StartAsync(CancellationToken cancellationToken = default) =>
        StartAsync(restartRunning: false, cancellationToken);

    /// <summary>
    /// Starts virtlogd and libvirtd unless a libvirtd already answers, and warms libvirt's capability cache. With
    /// <paramref name="restartRunning"/> (the caller changed qemu.conf, which libvirtd reads only when it starts) a running
    /// libvirtd is stopped first — found by the peer credentials of its socket, SIGTERM, waited for — and a new one is
    /// started and owned by this instance. Running domains survive: the new libvirtd reconnects to their QEMU monitors.
    /// </summary>
    /// <exception cref="ToolNotFoundException">libvirt is not installed (Debian packages libvirt-daemon-system, libvirt-clients).</exception>
    /// <exception cref="ServiceStartException">libvirtd did not come up, or the running one did not stop.</exception>
    public static async Task<LibvirtDaemon> StartAsync(bool restartRunning, CancellationToken cancellationToken = default)
    {
        var libvirtd = Tool.Find("/usr/sbin/libvirtd");
        var virtlogd = Tool.Find("/usr/sbin/virtlogd");
        Tool.Find("virsh");
        var directory = TestDirectory.Create("libvirtd");
        try
        {
            // A socket file left by a daemon that was killed refuses connections: only an answer counts. virtlogd
            // replaces a stale socket when it starts, and libvirtd cannot start a domain without it.
            int? virtlogdPid = null;
            if (!await Readiness.UnixSocketAnswersAsync(VirtlogdSocketPath, cancellationToken))
            {
                var virtlogdPidFile = directory.File("virtlogd.pid");
                await ProcessRunner.RunAsync(virtlogd, ["-d", "-p", virtlogdPidFile], cancellationToken);
                virtlogdPid = await ReadPidAsync(virtlogdPidFile, cancellationToken);
                await WaitForSocketAsync(VirtlogdSocketPath, virtlogdPid.Value, "virtlogd", cancellationToken);
            }

            if (restartRunning && await Readiness.UnixSocketAnswersAsync(SocketPath, cancellationToken))
            {
                await StopRunningAsync("its configuration changed", cancellationToken);
            }
            else if (await Readiness.UnixSocketAnswersAsync(SocketPath, cancellationToken) && (await VirshAsync(["version"], throwOnFailure: false, TimeSpan.FromSeconds(60), cancellationToken)).Succeeded)
            {
                TestKitLog.Write("using the libvirtd that is already running");
                return new LibvirtDaemon(directory, null, virtlogdPid);
            }

            var pid = await LaunchLibvirtdAsync(libvirtd, directory, cancellationToken);
            var daemon = new LibvirtDaemon(directory, pid, virtlogdPid);
            try
            {
                await WaitUntilReadyAsync(pid, cancellationToken);
                return daemon;
            }
            catch
            {
                await daemon.DisposeAsync();
                throw;
            }
        }
        catch
        {
            directory.Dispose();
            throw;
        }
    }

    /// <summary>
    /// Restarts libvirtd under the running domains (FAULTS.md F20): the running daemon is stopped (SIGTERM, waited for),
    /// <paramref name="whileStopped"/> runs, and a new libvirtd is started and waited for; it reconnects to the QEMU
    /// processes that are still alive. A daemon this instance owned is replaced by one it owns.
    /// </summary>
    /// <exception cref="ServiceStartException">libvirtd did not stop or did not come back.</exception>
    public async Task RestartAsync(Func<Task>? whileStopped = null, CancellationToken cancellationToken = default)
    {
        await StopRunningAsync("a test restarts it", cancellationToken);
        if (whileStopped is not null)
        {
            await whileStopped();
        }

        var pid = await LaunchLibvirtdAsync(Tool.Find("/usr/sbin/libvirtd"), _directory, cancellationToken);
        if (Owned)
        {
            _libvirtdPid = pid;
        }

        await WaitUntilReadyAsync(pid, cancellationToken);
    }

    /// <summary>Runs <c>virsh -c qemu:///system ARGS</c>.</summary>
    public static Task<ProcessResult> VirshAsync(IReadOnlyList<string> arguments, CancellationToken cancellationToken = default) =>
        VirshAsync(arguments, throwOnFailure: true, TimeSpan.FromMinutes(2), cancellationToken);

    /// <summary>Runs <c>virsh -c qemu:///system ARGS</c>, optionally without throwing on failure.</summary>
    public static Task<ProcessResult> VirshAsync(IReadOnlyList<string> arguments, bool throwOnFailure, TimeSpan timeout, CancellationToken cancellationToken = default) =>
        ProcessRunner.RunAsync("virsh", ["-c", Uri, .. arguments], new ProcessRunOptions { ThrowOnNonZeroExit = throwOnFailure, Timeout = timeout }, cancellationToken);

    /// <summary>Stops libvirtd and virtlogd by PID when this instance started them.</summary>
    public async ValueTask DisposeAsync()
    {
        try
        {
            foreach (var pid in new[] { _libvirtdPid, _virtlogdPid })
            {
                if (pid is { } p && ProcessState.IsAlive(p))
                {
                    _ = Interop.NativeMethods.Kill(p, Interop.NativeMethods.SigTerm);
                    for (var i = 0; i < 100 && ProcessState.IsAlive(p); i++)
                    {
                        await Task.Delay(100);
                    }

                    if (ProcessState.IsAlive(p))
                    {
                        _ = Interop.NativeMethods.Kill(p, Interop.NativeMethods.SigKill);
                    }
                }
            }
        }
        finally
        {
            _directory.Dispose();
        }
    }

    /// <summary>Starts <c>libvirtd -d</c> with its pid file in <paramref name="directory"/> and returns its pid.</summary>
    private static async Task<int> LaunchLibvirtdAsync(string libvirtd, TestDirectory directory, CancellationToken cancellationToken)
    {
        var pidFile = directory.File("libvirtd.pid");
        File.Delete(pidFile);
        await ProcessRunner.RunAsync(libvirtd, ["-d", "-p", pidFile], cancellationToken);
        return await ReadPidAsync(pidFile, cancellationToken);
    }

    private static async Task WaitUntilReadyAsync(int pid, CancellationToken cancellationToken)
    {
        await WaitForSocketAsync(SocketPath, pid, "libvirtd", cancellationToken);
        var started = System.Diagnostics.Stopwatch.StartNew();
        await VirshAsync(["version"], throwOnFailure: true, TimeSpan.FromSeconds(120), cancellationToken);
        TestKitLog.Write(string.Create(CultureInfo.InvariantCulture, $"libvirtd pid {pid} ready; first call took {started.Elapsed.TotalSeconds:F1} s"));
    }

    private static async Task StopRunningAsync(string reason, CancellationToken cancellationToken)
    {
        var pid = SocketServerPid(SocketPath);
        TestKitLog.Write(string.Create(CultureInfo.InvariantCulture, $"restarting libvirtd pid {pid}: {reason}"));
        _ = Interop.NativeMethods.Kill(pid, Interop.NativeMethods.SigTerm);
        var waited = System.Diagnostics.Stopwatch.StartNew();
        while (ProcessState.IsAlive(pid))
        {
            if (waited.Elapsed > TimeSpan.FromSeconds(30))
            {
                throw new ServiceStartException(string.Create(CultureInfo.InvariantCulture, $"libvirtd (pid {pid}) did not stop within 30 s of SIGTERM."));
            }

            await Task.Delay(100, cancellationToken);
        }
    }

    /// <summary>The process id of the server listening on a Unix socket (<c>SO_PEERCRED</c>).</summary>
    private static int SocketServerPid(string socketPath)
    {
        using var socket = new Socket(AddressFamily.Unix, SocketType.Stream, ProtocolType.Unspecified);
        socket.Connect(new UnixDomainSocketEndPoint(socketPath));
        Span<byte> credentials = stackalloc byte[12]; // struct ucred { pid_t pid; uid_t uid; gid_t gid; }
        var length = socket.GetRawSocketOption(Interop.NativeMethods.SolSocket, Interop.NativeMethods.SoPeerCred, credentials);
        var pid = length >= sizeof(int) ? MemoryMarshal.Read<int>(credentials) : 0;
        return pid > 0 ? pid : throw new ServiceStartException($"No peer credentials on {socketPath}.");
    }

    private static async Task WaitForSocketAsync(string socketPath, int pid, string daemon, CancellationToken cancellationToken)
    {
        var waited = System.Diagnostics.Stopwatch.StartNew();
        while (!await Readiness.UnixSocketAnswersAsync(socketPath, cancellationToken))
        {
            if (waited.Elapsed > TimeSpan.FromSeconds(30) || !ProcessState.IsAlive(pid))
            {
                throw new ServiceStartException($"{daemon} (pid {pid}) did not answer on {socketPath} within 30 s.");
            }

            await Task.Delay(100, cancellationToken);
        }
    }

    private static async Task<int> ReadPidAsync(string pidFile, CancellationToken cancellationToken)
    {
        for (var i = 0; i < 100; i++)
        {
            if (File.Exists(pidFile) && int.TryParse((await File.ReadAllTextAsync(pidFile, cancellationToken)).Trim(), NumberStyles.None, CultureInfo.InvariantCulture, out var pid))
            {
                return pid;
            }

            await Task.Delay(50, cancellationToken);
        }

        throw new ServiceStartException($"No pid in {pidFile} after 5 s.");
    }
}
