using System.Diagnostics;
using Drydock.Hypervisor.Contract;
using Drydock.Hypervisor.Qemu;
using Drydock.Interop.Tests.Hypervisor;
using Drydock.SiloHost.Cli;
using Drydock.TestKit;
using Xunit;

namespace Drydock.Interop.Tests.Transfer;

/// <summary>
/// SIGINT/SIGTERM to the real <c>drydock</c> executable (a child process, as an operator's Ctrl+C reaches it) in the
/// middle of a backup or a restore: it releases everything, says so in one line, exits 130, and the next run works.
/// </summary>
public sealed class CliInterruptTests
{
    private const long MiB = 1024 * 1024;
    private static readonly TimeSpan ExitTimeout = TimeSpan.FromSeconds(90);

    [Theory]
    [InlineData("INT")]
    [InlineData("TERM")]
    public async Task A_signal_mid_backup_releases_the_capture_and_the_lease_and_the_next_backups_work(string signal)
    {
        await using var h = await QemuContractHarness.CreateAsync(new ContractDomainSpec(), CliRig.Ct);
        using var rig = new CliRig(new HypervisorConnectors().Add(new QemuConnector()));
        await rig.InitAsync();
        await h.WriteAsync("vda", 0, CliRig.Data(8 * (int)MiB), CliRig.Ct);
        await h.WriteAsync("vdb", 0, CliRig.Data(4 * (int)MiB), CliRig.Ct);
        await h.ReopenDriverAsync(CliRig.Ct);

        // Every read of the capture's exports passes an nbdkit proxy that holds it for seconds: the signal arrives
        // while the backup is certainly in the middle of reading.
        var nbd = NbdSocketOf(h.ConnectorAddress);
        var log = rig.Directory("proxy.log");
        await using var proxy = await NbdkitServer.StartAsync(
            NbdkitOptions.Nbd(nbd) with { ReadOnly = true, Parameters = ["socket=" + nbd, "dynamic-export=true", "rdelay=4", "logfile=" + log], Filters = ["log", "delay"] },
            CliRig.Ct);
        var slowUri = "qemu:" + h.ConnectorAddress.Replace("nbd=" + nbd, "nbd=" + proxy.SocketPath, StringComparison.Ordinal);

        await using var backup = StartCli(rig, "backup", h.DomainId, "--hypervisor", slowUri, "--repo", rig.Repo, "--passphrase-file", rig.PassFile);
        await WaitUntilAsync(() => File.Exists(log) && File.ReadAllText(log).Contains("Read ", StringComparison.Ordinal), backup, "the backup to read through the proxy");
        Assert.False(backup.HasExited, backup.DescribeOutput());
        Send(backup, signal);
        var code = await ExitCodeAsync(backup);

        Assert.True(code == ExitCodes.Cancelled, $"exit {code}; {backup.DescribeOutput()}");
        Assert.Contains("drydock: interrupted; nothing was committed, the capture was released", backup.StandardError, StringComparison.Ordinal);
        Assert.Empty(await h.FindLeftoversAsync(CliRig.Ct));
        Assert.Empty(Directory.EnumerateFiles(Path.Combine(rig.RepoDirectory, ".tmp")));
        Assert.Empty(Directory.EnumerateFiles(Path.Combine(rig.RepoDirectory, "locks"), "*", SearchOption.AllDirectories));

        // The lease is free and nothing was published: the next backup (straight to the daemon) runs now, full, as
        // point 1, and the one after it is an incremental on it.
        var uri = "qemu:" + h.ConnectorAddress;
        var full = await rig.JsonAsync("backup", h.DomainId, "--hypervisor", uri);
        Assert.Equal(1, full.GetProperty("point").GetInt64());
        Assert.Equal("vda:full,vdb:full", CliRig.Levels(full));
        await h.WriteAsync("vda", 9 * MiB, CliRig.Data(64 * 1024), CliRig.Ct);
        await h.ReopenDriverAsync(CliRig.Ct);
        var inc = await rig.JsonAsync("backup", h.DomainId, "--hypervisor", uri);
        Assert.Equal("vda:inc,vdb:inc", CliRig.Levels(inc));
    }

    [Fact]
    public async Task SIGINT_mid_restore_removes_the_partial_image_and_the_restore_can_run_again()
    {
        // Enough incompressible data that the restore is still writing when the signal comes.
        const int Size = 256 * (int)MiB;
        await using var h = await QemuContractHarness.CreateAsync(new ContractDomainSpec { Disks = 1, DiskSize = Size }, CliRig.Ct);
        using var rig = new CliRig(new HypervisorConnectors().Add(new QemuConnector()));
        await rig.InitAsync();
        for (var offset = 0L; offset < Size; offset += 16 * MiB)
        {
            await h.WriteAsync("vda", (ulong)offset, CliRig.Data(16 * (int)MiB), CliRig.Ct);
        }

        await h.ReopenDriverAsync(CliRig.Ct);
        await rig.JsonAsync("backup", h.DomainId, "--hypervisor", "qemu:" + h.ConnectorAddress);

        var target = rig.Directory("restored");
        Directory.CreateDirectory(target);
        await using var restore = StartCli(rig, "restore", h.DomainId, "--to", target, "--format", "qcow2", "--repo", rig.Repo, "--passphrase-file", rig.PassFile);
        await WaitUntilAsync(() => Directory.EnumerateFiles(target, "vda.qcow2.partial-*").Any(), restore, "the restore to create its partial image");
        Assert.False(restore.HasExited, restore.DescribeOutput());
        restore.Interrupt();
        var code = await ExitCodeAsync(restore);

        Assert.True(code == ExitCodes.Cancelled, $"exit {code}; {restore.DescribeOutput()}");
        Assert.Contains("drydock: interrupted; no image was written (the partial one was removed)", restore.StandardError, StringComparison.Ordinal);
        Assert.Empty(Directory.EnumerateFileSystemEntries(target));

        await rig.JsonAsync("restore", h.DomainId, "--to", target, "--format", "qcow2");
        Assert.True(File.Exists(Path.Combine(target, "vda.qcow2")));
    }

    // Through env --default-signal: a test run started in the background by a non-interactive shell inherits SIGINT
    // ignored (as every background job does), and .NET leaves an ignored SIGINT ignored; an operator's foreground
    // drydock has it at its default, which is what this restores. env execs drydock, so the pid signalled is drydock's.
    private static ManagedProcess StartCli(CliRig rig, params string[] args) =>
        ManagedProcess.Start(
            "env",
            ["--default-signal=INT,TERM", Path.Combine(AppContext.BaseDirectory, "drydock"), .. args],
            environment: new Dictionary<string, string?> { ["DRYDOCK_WORK_DIR"] = rig.Directory("work") });

    private static void Send(ManagedProcess process, string signal)
    {
        if (signal == "INT")
        {
            process.Interrupt();
        }
        else
        {
            process.Terminate();
        }
    }

    private static string NbdSocketOf(string connectorAddress)
    {
        var query = connectorAddress[(connectorAddress.IndexOf('?', StringComparison.Ordinal) + 1)..];
        return query.Split('&').Single(p => p.StartsWith("nbd=", StringComparison.Ordinal))["nbd=".Length..];
    }

    private static async Task WaitUntilAsync(Func<bool> condition, ManagedProcess process, string what)
    {
        var waited = Stopwatch.StartNew();
        while (!condition())
        {
            Assert.False(process.HasExited, $"drydock exited (code {process.ExitCode}) before {what}; {process.DescribeOutput()}");
            Assert.True(waited.Elapsed < TimeSpan.FromSeconds(60), $"waited 60 s for {what}; {process.DescribeOutput()}");
            await Task.Delay(5, CliRig.Ct);
        }
    }

    private static async Task<int> ExitCodeAsync(ManagedProcess process)
    {
        using var limit = CancellationTokenSource.CreateLinkedTokenSource(CliRig.Ct);
        limit.CancelAfter(ExitTimeout);
        try
        {
            await process.WaitForExitAsync(limit.Token);
        }
        catch (OperationCanceledException) when (!CliRig.Ct.IsCancellationRequested)
        {
            Assert.Fail($"drydock did not exit within {ExitTimeout} of the signal; {process.DescribeOutput()}");
        }

        return process.ExitCode!.Value;
    }
}
