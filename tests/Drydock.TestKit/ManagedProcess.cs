using System.Collections.Concurrent;
using System.Diagnostics;
using System.Globalization;
using System.Runtime.InteropServices;
using System.Text;
using Drydock.TestKit.Interop;

namespace Drydock.TestKit;

/// <summary>
/// A background process owned by a fixture. It runs in its own session and process group (started through
/// <c>setsid</c>, so its process id is also its group id), its output is captured, and stopping it signals
/// the whole group: SIGTERM, a grace period, then SIGKILL, then a wait until the group is gone. Processes
/// still running when the test host exits normally are killed then too.
/// </summary>
public sealed class ManagedProcess : IAsyncDisposable
{
    private const int MaxCapturedChars = 1 << 20;

    private static readonly ConcurrentDictionary<int, ManagedProcess> Live = new();

    private readonly Process _process;
    private readonly StringBuilder _stdout = new();
    private readonly StringBuilder _stderr = new();
    private readonly Lock _outputLock = new();
    private int _stopped;
    private int? _exitCode;

    static ManagedProcess()
    {
        AppDomain.CurrentDomain.ProcessExit += (_, _) =>
        {
            foreach (var process in Live.Values)
            {
                process.SignalGroup(NativeMethods.SigKill);
            }
        };
    }

    private ManagedProcess(Process process, string name, string commandLine)
    {
        _process = process;
        Name = name;
        CommandLine = commandLine;
    }

    /// <summary>A short name for messages (the program name).</summary>
    public string Name { get; }

    /// <summary>The command line, shell-quoted.</summary>
    public string CommandLine { get; }

    /// <summary>The process id, which is also its process group id.</summary>
    public int Id { get; private set; }

    /// <summary>Whether the process has exited.</summary>
    public bool HasExited => ExitCode is not null;

    /// <summary>The exit code, once it has exited (still available after dispose).</summary>
    public int? ExitCode
    {
        get
        {
            if (_exitCode is null && Volatile.Read(ref _stopped) != 2 && _process.HasExited)
            {
                _exitCode = _process.ExitCode;
            }

            return _exitCode;
        }
    }

    /// <summary>Standard output captured so far (the first MiB).</summary>
    public string StandardOutput
    {
        get
        {
            lock (_outputLock)
            {
                return _stdout.ToString();
            }
        }
    }

    /// <summary>Standard error captured so far (the first MiB).</summary>
    public string StandardError
    {
        get
        {
            lock (_outputLock)
            {
                return _stderr.ToString();
            }
        }
    }

    /// <summary>Starts <paramref name="tool"/> in a new session and process group.</summary>
    /// <param name="tool">Program name (found on PATH) or absolute path.</param>
    /// <param name="arguments">Arguments, each passed as is.</param>
    /// <param name="workingDirectory">Working directory; default: the current one.</param>
    /// <param name="environment">Variables added to (or, with null, removed from) the inherited environment.</param>
    /// <returns>The running process.</returns>
    /// <exception cref="ToolNotFoundException">The program (or <c>setsid</c>) is not installed.</exception>
    public static ManagedProcess Start(string tool, IReadOnlyList<string> arguments, string? workingDirectory = null, IReadOnlyDictionary<string, string?>? environment = null)
    {
        var path = Tool.Find(tool);
        var setsid = Tool.Find("setsid");
        var commandLine = ProcessRunner.FormatCommandLine(tool, arguments);
        var startInfo = ProcessRunner.CreateStartInfo(setsid, [path, .. arguments], workingDirectory, environment);
        var process = new Process { StartInfo = startInfo, EnableRaisingEvents = true };
        var managed = new ManagedProcess(process, Path.GetFileName(tool), commandLine);
        process.OutputDataReceived += (_, e) => managed.Append(managed._stdout, e.Data);
        process.ErrorDataReceived += (_, e) => managed.Append(managed._stderr, e.Data);
        process.Start();
        managed.Id = process.Id;
        // setsid execs in place (the child is not a group leader), so the pid we know is the server's.
        Live[process.Id] = managed;
        process.StandardInput.Close();
        process.BeginOutputReadLine();
        process.BeginErrorReadLine();
        TestKitLog.Write(string.Create(CultureInfo.InvariantCulture, $"started pid {process.Id}: {commandLine}"));
        return managed;
    }

    /// <summary>Sends SIGINT (as Ctrl+C would) to the process itself, not to its group.</summary>
    public void Interrupt() => Signal(NativeMethods.SigInt);

    /// <summary>Sends SIGTERM to the process itself, not to its group.</summary>
    public void Terminate() => Signal(NativeMethods.SigTerm);

    /// <summary>Waits for the process to exit by itself.</summary>
    public Task WaitForExitAsync(CancellationToken cancellationToken = default) => _process.WaitForExitAsync(cancellationToken);

    /// <summary>
    /// Stops the process group: SIGTERM, up to <paramref name="gracePeriod"/> (default 10 s) for it to exit,
    /// then SIGKILL; returns when the process has exited and (within 5 s) no member of its group is left.
    /// Calling it again does nothing.
    /// </summary>
    public async Task StopAsync(TimeSpan? gracePeriod = null, CancellationToken cancellationToken = default)
    {
        if (Interlocked.Exchange(ref _stopped, 1) != 0)
        {
            return;
        }

        try
        {
            SignalGroup(NativeMethods.SigTerm);
            using (var grace = CancellationTokenSource.CreateLinkedTokenSource(cancellationToken))
            {
                grace.CancelAfter(gracePeriod ?? TimeSpan.FromSeconds(10));
                try
                {
                    await _process.WaitForExitAsync(grace.Token);
                }
                catch (OperationCanceledException) when (!cancellationToken.IsCancellationRequested)
                {
                    TestKitLog.Write(string.Create(CultureInfo.InvariantCulture, $"pid {Id} ({Name}) ignored SIGTERM: SIGKILL"));
                }
            }

            // Whatever is left of the group (the leader, or children it forked) goes now.
            SignalGroup(NativeMethods.SigKill);
            await _process.WaitForExitAsync(cancellationToken);
            _exitCode = _process.ExitCode;
            var deadline = Stopwatch.StartNew();
            while (GroupExists() && deadline.Elapsed < TimeSpan.FromSeconds(5))
            {
                await Task.Delay(20, cancellationToken);
            }

            TestKitLog.Write(string.Create(CultureInfo.InvariantCulture, $"stopped pid {Id} ({Name}), exit code {_exitCode}"));
        }
        finally
        {
            Live.TryRemove(new KeyValuePair<int, ManagedProcess>(Id, this));
        }
    }

    /// <summary>Stops the process group (see <see cref="StopAsync"/>) and releases the process handle.</summary>
    public async ValueTask DisposeAsync()
    {
        try
        {
            await StopAsync();
        }
        finally
        {
            Volatile.Write(ref _stopped, 2);
            _process.Dispose();
        }
    }

    /// <summary>Standard error and output for an exception message, trimmed to their last few KiB.</summary>
    public string DescribeOutput() =>
        $"stderr: {ProcessRunner.Tail(StandardError)}\nstdout: {ProcessRunner.Tail(StandardOutput)}";

    /// <summary>Whether any process of the group is still there (zombies included).</summary>
    public bool GroupExists()
    {
        if (NativeMethods.Kill(-Id, 0) == 0)
        {
            return true;
        }

        return Marshal.GetLastPInvokeError() != NativeMethods.Esrch;
    }

    private void Signal(int signal)
    {
        if (NativeMethods.Kill(Id, signal) != 0)
        {
            throw new InvalidOperationException(string.Create(CultureInfo.InvariantCulture, $"kill({Id}, {signal}) failed: errno {Marshal.GetLastPInvokeError()}"));
        }
    }

    private void SignalGroup(int signal)
    {
        // ESRCH (group already gone) is the expected outcome once everything has exited.
        _ = NativeMethods.Kill(-Id, signal);
    }

    private void Append(StringBuilder buffer, string? line)
    {
        if (line is null)
        {
            return;
        }

        lock (_outputLock)
        {
            if (buffer.Length < MaxCapturedChars)
            {
                buffer.Append(line).Append('\n');
            }
        }
    }
}
