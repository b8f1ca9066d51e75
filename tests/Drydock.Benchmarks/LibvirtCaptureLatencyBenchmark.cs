using System.Diagnostics;
using System.Globalization;
using System.Text;
using Drydock.Hypervisor;
using Drydock.Hypervisor.Libvirt;
using Drydock.Nbd;
using Drydock.Nbd.Client;
using Drydock.TestKit.Libvirt;

namespace Drydock.Benchmarks;

/// <summary>
/// Capture set-up and tear-down latency per domain on real libvirt (TCG domain, two qcow2 disks): the libvirt driver's
/// <c>BeginCaptureAsync</c> → NBD handshake on each export → <c>ReleaseCaptureAsync</c>, against
/// <c>virsh backup-begin</c> → the same handshakes → <c>virsh domjobabort</c>, alternating, in one process tree.
/// The driver's side also pre-checks busy and bitmap state and waits until libvirt has torn the job down (scratch
/// files deleted); the virsh side stops timing when domjobabort returns, then waits (untimed) for the same end.
/// </summary>
internal sealed class LibvirtCaptureLatencyBenchmark(int runs, TextWriter log)
{
    public async Task<string> RunAsync(CancellationToken cancellationToken)
    {
        var fixture = new LibvirtFixture();
        await fixture.InitializeAsync();
        try
        {
            await using var domain = await fixture.CreateDomainAsync(cancellationToken: cancellationToken);
            await LibvirtDaemon.VirshAsync(["resume", domain.Name], cancellationToken);
            await using var driver = await LibvirtDriver.ConnectAsync(new LibvirtDriverOptions
            {
                SocketDirectory = fixture.SocketDirectory,
                ScratchDirectory = fixture.ScratchDirectory,
            }, cancellationToken: cancellationToken);
            var backupXml = Path.Combine(domain.DirectoryPath, "bench-backup.xml");
            var socket = Path.Combine(fixture.SocketDirectory, "bench-virsh.sock");
            await File.WriteAllTextAsync(backupXml, $"""
                <domainbackup mode='pull'>
                  <server transport='unix' socket='{socket}'/>
                  <disks>
                    <disk name='vda' backup='yes' type='file'><scratch file='{fixture.ScratchDirectory}/bench-virsh.vda.qcow2'/></disk>
                    <disk name='vdb' backup='yes' type='file'><scratch file='{fixture.ScratchDirectory}/bench-virsh.vdb.qcow2'/></disk>
                  </disks>
                </domainbackup>
                """, cancellationToken);

            // One warm-up of each (first monitor commands, JIT).
            await DrydockOnceAsync(driver, domain, cancellationToken);
            await VirshOnceAsync(domain, backupXml, socket, cancellationToken);
            var ours = new List<double>();
            var theirs = new List<double>();
            for (var i = 0; i < runs; i++)
            {
                ours.Add(await DrydockOnceAsync(driver, domain, cancellationToken));
                theirs.Add(await VirshOnceAsync(domain, backupXml, socket, cancellationToken));
                await log.WriteLineAsync(string.Create(CultureInfo.InvariantCulture, $"run {i + 1}/{runs}: drydock {ours[^1]:F0} ms, virsh {theirs[^1]:F0} ms"));
            }

            return Format(ours, theirs);
        }
        finally
        {
            await fixture.DisposeAsync();
        }
    }

    private static async Task<double> DrydockOnceAsync(LibvirtDriver driver, LibvirtTestDomain domain, CancellationToken cancellationToken)
    {
        var clock = Stopwatch.StartNew();
        var capture = await driver.BeginCaptureAsync(CaptureRequest.Full(domain.Uuid, ["vda", "vdb"]), cancellationToken);
        foreach (var disk in capture.Disks)
        {
            await HandshakeAsync(disk.Endpoint, cancellationToken);
        }

        await driver.ReleaseCaptureAsync(domain.Uuid, capture.Id, CaptureOutcome.Abandoned, cancellationToken);
        return clock.Elapsed.TotalMilliseconds;
    }

    private static async Task<double> VirshOnceAsync(LibvirtTestDomain domain, string backupXml, string socket, CancellationToken cancellationToken)
    {
        var clock = Stopwatch.StartNew();
        await LibvirtDaemon.VirshAsync(["backup-begin", domain.Name, backupXml], cancellationToken);
        foreach (var target in new[] { "vda", "vdb" })
        {
            await HandshakeAsync(NbdUri.ForUnixSocket(socket, target), cancellationToken);
        }

        await LibvirtDaemon.VirshAsync(["domjobabort", domain.Name], cancellationToken);
        var elapsed = clock.Elapsed.TotalMilliseconds;
        while ((await LibvirtDaemon.VirshAsync(["backup-dumpxml", domain.Name], throwOnFailure: false, TimeSpan.FromSeconds(30), cancellationToken)).Succeeded)
        {
            await Task.Delay(20, cancellationToken);
        }

        return elapsed;
    }

    private static async Task HandshakeAsync(NbdUri endpoint, CancellationToken cancellationToken)
    {
        await using var client = await NbdClient.ConnectAsync(endpoint, cancellationToken: cancellationToken);
        await client.DisconnectAsync(cancellationToken);
    }

    private static string Format(List<double> ours, List<double> theirs)
    {
        static double Median(List<double> values)
        {
            var sorted = values.Order().ToList();
            return sorted.Count % 2 == 1 ? sorted[sorted.Count / 2] : (sorted[(sorted.Count / 2) - 1] + sorted[sorted.Count / 2]) / 2;
        }

        var ratio = Median(ours) / Median(theirs);
        var load = File.Exists("/proc/loadavg") ? File.ReadAllText("/proc/loadavg").Split(' ')[0] : "?";
        var text = new StringBuilder();
        text.AppendLine(CultureInfo.InvariantCulture, $"Capture set-up and tear-down per domain (2 qcow2 disks, 64 + 32 MiB, TCG domain running), libvirt 9.0 + QEMU 7.2, {ours.Count} alternating runs, load average {load} on 2 shared cores.");
        text.AppendLine();
        text.AppendLine("| sequence | median ms | min ms | max ms |");
        text.AppendLine("|---|---:|---:|---:|");
        text.AppendLine(CultureInfo.InvariantCulture, $"| Drydock libvirt driver: BeginCapture → NBD handshake × 2 → ReleaseCapture | {Median(ours):F0} | {ours.Min():F0} | {ours.Max():F0} |");
        text.AppendLine(CultureInfo.InvariantCulture, $"| `virsh backup-begin DOM backup.xml` → NBD handshake × 2 → `virsh domjobabort DOM` | {Median(theirs):F0} | {theirs.Min():F0} | {theirs.Max():F0} |");
        text.AppendLine();
        text.AppendLine(CultureInfo.InvariantCulture, $"Ratio Drydock / virsh (medians): **{ratio:F2}×** (target ≤ 1.2×). Drydock's sequence also checks that no backup or other job is running and that the new checkpoint name is free, reads the domain and job XML back, and waits until libvirt has torn the job down (scratch files deleted); the virsh sequence stops the clock when domjobabort returns. Run: `dotnet run -c Release --project tests/Drydock.Benchmarks -- libvirt-capture-latency --runs 10 --write` as root (it starts libvirtd).");
        return text.ToString();
    }
}
