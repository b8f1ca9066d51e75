using System.Collections.Concurrent;
using System.Diagnostics;
using System.Runtime.InteropServices;

namespace Drydock.Runtime.Tests;

/// <summary>A chaos silo as a real child process: started, read line by line, killed, paused and resumed by PID.</summary>
internal sealed partial class SiloProcess : IAsyncDisposable
{
    private const int SigCont = 18;
    private const int SigStop = 19;
    private const int SigTerm = 15;

    private readonly Process _process;
    private readonly ConcurrentQueue<string> _lines = new();
    private readonly ConcurrentQueue<string> _errors = new();

    private SiloProcess(Process process, string siloId)
    {
        _process = process;
        SiloId = siloId;
    }

    public string SiloId { get; }

    public int Pid => _process.Id;

    public bool HasExited => _process.HasExited;

    public IReadOnlyCollection<string> Lines => _lines;

    public string ErrorText => string.Join('\n', _errors);

    public static async Task<SiloProcess> StartAsync(string connectionString, string siloId, params string[] arguments)
    {
        var start = new ProcessStartInfo
        {
            FileName = Environment.GetEnvironmentVariable("DOTNET_HOST_PATH") ?? "dotnet",
            RedirectStandardOutput = true,
            RedirectStandardError = true,
            UseShellExecute = false,
        };
        start.ArgumentList.Add(Path.Combine(AppContext.BaseDirectory, "Drydock.Runtime.ChaosHost.dll"));
        foreach (var argument in (string[])["--connection", connectionString, "--silo-id", siloId, "--migrate", "false", .. arguments])
        {
            start.ArgumentList.Add(argument);
        }

        var process = Process.Start(start) ?? throw new InvalidOperationException("The chaos host did not start.");
        var silo = new SiloProcess(process, siloId);
        process.OutputDataReceived += (_, e) =>
        {
            if (e.Data is not null)
            {
                silo._lines.Enqueue(e.Data);
            }
        };
        process.ErrorDataReceived += (_, e) =>
        {
            if (e.Data is not null)
            {
                silo._errors.Enqueue(e.Data);
            }
        };
        process.BeginOutputReadLine();
        process.BeginErrorReadLine();
        await silo.WaitForLineAsync(l => l.StartsWith("ready ", StringComparison.Ordinal), "ready");
        return silo;
    }

    public int Count(string prefix) => _lines.Count(l => l.StartsWith(prefix, StringComparison.Ordinal));

    public async Task WaitForLineAsync(Func<string, bool> match, string what)
    {
        await Wait.UntilAsync(
            () =>
            {
                if (_process.HasExited && !_lines.Any(match))
                {
                    throw new InvalidOperationException($"Silo {SiloId} exited ({_process.ExitCode}) before '{what}': {ErrorText}");
                }

                return Task.FromResult(_lines.Any(match));
            },
            found => found,
            $"'{what}' from silo {SiloId}");
    }

    public void KillNine() => _process.Kill();

    public Task WaitForExitAsync() => _process.WaitForExitAsync().WaitAsync(Wait.Deadline);

    public void Pause() => Signal(SigStop);

    public void Resume() => Signal(SigCont);

    public async Task StopAsync()
    {
        Signal(SigTerm);
        await _process.WaitForExitAsync().WaitAsync(Wait.Deadline);
    }

    public async ValueTask DisposeAsync()
    {
        if (!_process.HasExited)
        {
            Signal(SigCont);
            _process.Kill();
            await _process.WaitForExitAsync();
        }

        _process.Dispose();
    }

    private void Signal(int signal)
    {
        if (Kill(_process.Id, signal) != 0)
        {
            throw new InvalidOperationException($"kill({_process.Id}, {signal}) failed: errno {Marshal.GetLastPInvokeError()}");
        }
    }

    [LibraryImport("libc", EntryPoint = "kill", SetLastError = true)]
    [DefaultDllImportSearchPaths(DllImportSearchPath.SafeDirectories)]
    private static partial int Kill(int pid, int signal);
}
