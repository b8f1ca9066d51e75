using System.Diagnostics;
using Drydock.TestKit;
using Xunit;

namespace Drydock.Interop.Tests.Fixtures;

public sealed class ProcessFixtureTests
{
    private static CancellationToken Ct => TestContext.Current.CancellationToken;

    [Fact]
    public async Task Runner_captures_output_and_exit_code()
    {
        var result = await ProcessRunner.RunAsync("sh", ["-c", "echo out; echo err >&2; exit 3"],
            ProcessRunOptions.Default with { ThrowOnNonZeroExit = false }, Ct);

        Assert.Equal(3, result.ExitCode);
        Assert.Equal("out\n", result.StandardOutput);
        Assert.Equal("err\n", result.StandardError);
    }

    [Fact]
    public async Task Runner_failure_names_the_command_line_and_stderr()
    {
        var error = await Assert.ThrowsAsync<ProcessFailedException>(() =>
            ProcessRunner.RunAsync("qemu-img", ["info", "/nonexistent/disk image.qcow2"], Ct));

        Assert.Contains("qemu-img info '/nonexistent/disk image.qcow2'", error.Message, StringComparison.Ordinal);
        Assert.Contains("No such file or directory", error.Message, StringComparison.Ordinal);
        Assert.NotEqual(0, error.Result.ExitCode);
    }

    [Fact]
    public async Task Runner_passes_standard_input()
    {
        var result = await ProcessRunner.RunAsync("sh", ["-c", "cat"],
            ProcessRunOptions.Default with { StandardInput = "hello"u8.ToArray() }, Ct);

        Assert.Equal("hello", result.StandardOutput);
    }

    [Fact]
    public async Task Runner_kills_a_command_that_outlives_its_timeout()
    {
        var stopwatch = Stopwatch.StartNew();

        var error = await Assert.ThrowsAsync<TimeoutException>(() => ProcessRunner.RunAsync("sleep", ["30"],
            ProcessRunOptions.Default with { Timeout = TimeSpan.FromMilliseconds(300) }, Ct));

        Assert.Contains("sleep 30", error.Message, StringComparison.Ordinal);
        Assert.True(stopwatch.Elapsed < TimeSpan.FromSeconds(10));
    }

    [Fact]
    public async Task Missing_tool_names_its_debian_package()
    {
        var error = await Assert.ThrowsAsync<ToolNotFoundException>(() => ProcessRunner.RunAsync("drydock-no-such-tool", [], Ct));
        var known = new ToolNotFoundException("qemu-storage-daemon", Tool.DebianPackage("qemu-storage-daemon"));

        Assert.Contains("drydock-no-such-tool", error.Message, StringComparison.Ordinal);
        Assert.Contains("qemu-system-common", known.Message, StringComparison.Ordinal);
        Assert.Equal("libnbd-bin", Tool.DebianPackage("nbdinfo"));
        Assert.Equal("qemu-utils", Tool.DebianPackage("qemu-nbd"));
    }

    [Fact]
    public async Task Managed_process_stop_kills_its_whole_process_group()
    {
        // The shell forks a background child; stopping must take the child too (no orphans).
        var process = ManagedProcess.Start("sh", ["-c", "sleep 300 & echo $!; wait"]);
        var childPid = await WaitForOutputLineAsync(process);

        Assert.True(process.GroupExists());
        Assert.True(Directory.Exists($"/proc/{childPid}"));

        await process.DisposeAsync();

        Assert.True(process.HasExited);
        Assert.False(process.GroupExists());
        Assert.False(IsRunning(childPid));
    }

    [Fact]
    public async Task Managed_process_that_ignores_sigterm_is_killed_after_the_grace_period()
    {
        await using var process = ManagedProcess.Start("sh", ["-c", "trap '' TERM; echo ready; while :; do sleep 0.1; done"]);
        await WaitForOutputLineAsync(process);

        await process.StopAsync(TimeSpan.FromMilliseconds(300), Ct);

        Assert.True(process.HasExited);
        Assert.False(process.GroupExists());
    }

    [Fact]
    public void Test_directory_is_deleted_on_dispose_unless_kept()
    {
        string deleted;
        using (var directory = TestDirectory.Create("unit", keep: false))
        {
            deleted = directory.Path;
            File.WriteAllText(directory.File("a"), "x");
            Directory.CreateDirectory(directory.File("sub"));
        }

        string kept;
        using (var directory = TestDirectory.Create("unit", keep: true))
        {
            kept = directory.Path;
        }

        Assert.False(Directory.Exists(deleted));
        Assert.True(Directory.Exists(kept));
        Directory.Delete(kept);
    }

    [Fact]
    public void Socket_path_that_is_too_long_is_refused_clearly()
    {
        using var directory = TestDirectory.Create("unit");

        var error = Assert.Throws<InvalidOperationException>(() => directory.SocketPath(new string('s', 120)));

        Assert.Contains("107 bytes", error.Message, StringComparison.Ordinal);
    }

    private static async Task<int> WaitForOutputLineAsync(ManagedProcess process)
    {
        var stopwatch = Stopwatch.StartNew();
        while (stopwatch.Elapsed < TimeSpan.FromSeconds(10))
        {
            var line = process.StandardOutput.Split('\n')[0];
            if (line.Length > 0)
            {
                return int.TryParse(line, out var pid) ? pid : 0;
            }

            await Task.Delay(20, Ct);
        }

        throw new TimeoutException("The process printed nothing.");
    }

    private static bool IsRunning(int pid)
    {
        // A zombie (state Z) is dead; it only waits for init to reap it.
        try
        {
            var stat = File.ReadAllText($"/proc/{pid}/stat");
            return stat[(stat.LastIndexOf(')') + 2)..].Split(' ')[0] != "Z";
        }
        catch (IOException)
        {
            return false;
        }
    }
}
