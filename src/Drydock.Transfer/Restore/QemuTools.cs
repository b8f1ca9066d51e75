using System.Diagnostics;
using Drydock.Nbd;
using Drydock.Nbd.Client;

namespace Drydock.Transfer.Restore;

/// <summary>qemu-img and qemu-nbd, found on PATH, run as child processes this process owns.</summary>
internal static class QemuTools
{
    /// <summary>Finds an executable on PATH.</summary>
    /// <exception cref="TransferRequestException">It is not installed (names the Debian package).</exception>
    public static string Find(string tool, string disk)
    {
        var path = Environment.GetEnvironmentVariable("PATH") ?? "";
        foreach (var directory in path.Split(Path.PathSeparator, StringSplitOptions.RemoveEmptyEntries))
        {
            var candidate = Path.Combine(directory, tool);
            if (File.Exists(candidate) && (File.GetUnixFileMode(candidate) & (UnixFileMode.UserExecute | UnixFileMode.GroupExecute | UnixFileMode.OtherExecute)) != 0)
            {
                return candidate;
            }
        }

        throw new TransferRequestException($"Disk {disk}: a qcow2 restore needs {tool}, which is not on PATH: install the Debian package qemu-utils") { Disk = disk };
    }

    /// <summary>Runs a tool to completion.</summary>
    /// <exception cref="TransferException">It failed (names the command and its error output).</exception>
    public static async Task RunAsync(string tool, IReadOnlyList<string> arguments, string disk, CancellationToken cancellationToken)
    {
        using var process = Process.Start(StartInfo(tool, arguments)) ?? throw new TransferException($"Disk {disk}: cannot start {tool}") { Disk = disk };
        var output = process.StandardOutput.ReadToEndAsync(cancellationToken);
        var error = process.StandardError.ReadToEndAsync(cancellationToken);
        try
        {
            await process.WaitForExitAsync(cancellationToken);
        }
        catch (OperationCanceledException)
        {
            process.Kill(entireProcessTree: true);
            await process.WaitForExitAsync(CancellationToken.None);
            throw;
        }

        await Task.WhenAll(output, error);
        if (process.ExitCode != 0)
        {
            throw new TransferException($"Disk {disk}: {Describe(tool, arguments)} failed with exit code {process.ExitCode}: {(await error).Trim()}") { Disk = disk };
        }
    }

    /// <summary>Starts a long-running tool (qemu-nbd); disposing kills it if it is still running.</summary>
    public static QemuProcess Start(string tool, IReadOnlyList<string> arguments, string disk)
    {
        var process = Process.Start(StartInfo(tool, arguments)) ?? throw new TransferException($"Disk {disk}: cannot start {tool}") { Disk = disk };
        return new QemuProcess(process, Describe(tool, arguments), disk);
    }

    private static string Describe(string tool, IEnumerable<string> arguments) => string.Join(' ', arguments.Prepend(Path.GetFileName(tool)));

    private static ProcessStartInfo StartInfo(string tool, IReadOnlyList<string> arguments)
    {
        var info = new ProcessStartInfo(tool)
        {
            UseShellExecute = false,
            RedirectStandardOutput = true,
            RedirectStandardError = true,
            RedirectStandardInput = false,
        };
        foreach (var argument in arguments)
        {
            info.ArgumentList.Add(argument);
        }

        return info;
    }
}

/// <summary>A qemu-nbd child process.</summary>
internal sealed class QemuProcess : IAsyncDisposable
{
    private readonly Process _process;
    private readonly string _commandLine;
    private readonly string _disk;
    private readonly Task<string> _output;
    private readonly Task<string> _error;

    public QemuProcess(Process process, string commandLine, string disk)
    {
        _process = process;
        _commandLine = commandLine;
        _disk = disk;
        _output = process.StandardOutput.ReadToEndAsync();
        _error = process.StandardError.ReadToEndAsync();
    }

    /// <summary>Connects once the server listens on <paramref name="socket"/> (retrying refused connections), failing if it exits first.</summary>
    public async Task<NbdClient> ConnectWhenListeningAsync(string socket, Func<Task<NbdClient>> connect, TimeSpan timeout, TimeProvider time, CancellationToken cancellationToken)
    {
        var started = time.GetTimestamp();
        while (true)
        {
            if (_process.HasExited)
            {
                throw new TransferException($"Disk {_disk}: {_commandLine} exited with code {_process.ExitCode} before serving: {(await _error).Trim()}") { Disk = _disk };
            }

            if (File.Exists(socket))
            {
                try
                {
                    return await connect();
                }
                catch (NbdConnectionException) when (time.GetElapsedTime(started) < timeout)
                {
                    // Bound but not yet listening.
                }
            }

            if (time.GetElapsedTime(started) >= timeout)
            {
                throw new TransferException($"Disk {_disk}: {_commandLine} did not listen on {socket} within {timeout.TotalSeconds:0} s") { Disk = _disk };
            }

            await Task.Delay(TimeSpan.FromMilliseconds(20), time, cancellationToken);
        }
    }

    /// <summary>Waits for the server to exit on its own (it flushes the image when its last client leaves).</summary>
    public async Task WaitForExitAsync(TimeSpan timeout, CancellationToken cancellationToken)
    {
        using var limit = CancellationTokenSource.CreateLinkedTokenSource(cancellationToken);
        limit.CancelAfter(timeout);
        try
        {
            await _process.WaitForExitAsync(limit.Token);
        }
        catch (OperationCanceledException) when (!cancellationToken.IsCancellationRequested)
        {
            throw new TransferException($"Disk {_disk}: {_commandLine} did not exit within {timeout.TotalSeconds:0} s after the restore disconnected") { Disk = _disk };
        }

        await Task.WhenAll(_output, _error);
        if (_process.ExitCode != 0)
        {
            throw new TransferException($"Disk {_disk}: {_commandLine} failed with exit code {_process.ExitCode}: {(await _error).Trim()}") { Disk = _disk };
        }
    }

    /// <inheritdoc/>
    public async ValueTask DisposeAsync()
    {
        try
        {
            if (!_process.HasExited)
            {
                _process.Kill(entireProcessTree: true);
                await _process.WaitForExitAsync(CancellationToken.None);
            }

            await Task.WhenAll(_output, _error);
        }
        catch (Exception e) when (e is InvalidOperationException or System.ComponentModel.Win32Exception or IOException)
        {
            // Already gone.
        }
        finally
        {
            _process.Dispose();
        }
    }
}
