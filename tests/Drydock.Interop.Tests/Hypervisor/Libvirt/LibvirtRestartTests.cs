using Drydock.Hypervisor;
using Drydock.Nbd.Client;
using Drydock.TestKit.Libvirt;
using Xunit;

namespace Drydock.Interop.Tests.Hypervisor.Libvirt;

/// <summary>
/// FAULTS.md F20 against real libvirt 9.0: libvirtd restarts while a capture is held. The driver reconnects and
/// reconciles; the capture goes on only when its backup job and export survived, otherwise it is broken (CE).
/// </summary>
[Collection(LibvirtCollection.Name)]
public sealed class LibvirtRestartTests(LibvirtFixture fixture)
{
    private const long MiB = 1024 * 1024;
    private static readonly TimeSpan EventWait = TimeSpan.FromSeconds(60);

    [Fact]
    public async Task F20_libvirtd_restart_mid_capture_the_capture_goes_on_point_in_time_and_commits()
    {
        var ct = TestContext.Current.CancellationToken;
        await using var domain = await fixture.CreateDomainAsync(cancellationToken: ct);
        await using var driver = await LibvirtTestSupport.ConnectAsync(fixture, ct);
        await using var events = new EventRecorder(driver);
        await domain.WriteAsync("vda", 0, 4 * MiB, 0x11, ct);
        var capture = await driver.BeginCaptureAsync(CaptureRequest.Full(domain.Uuid, ["vda"], "drydock-f20-1"), ct);

        await using (var client = await NbdClient.ConnectAsync(capture.Disk("vda").Endpoint, cancellationToken: ct))
        {
            var data = new byte[4 * MiB];
            await client.ReadAsync(0, data.AsMemory(0, (int)(2 * MiB)), ct);

            await fixture.Daemon.RestartAsync(cancellationToken: ct);
            await events.WaitForAsync(e => e.Kind == DomainEventKind.EventsLost, ct);

            // The guest writes through the new libvirtd; the capture still reads the disk as it was at its instant.
            await domain.WriteAsync("vda", 0, 4 * MiB, 0x22, ct);
            await client.ReadAsync(0, data, ct);
            Assert.All(data, b => Assert.Equal(0x11, b));
        }

        Assert.Single(await driver.ListCapturesAsync(domain.Uuid, ct), c => c.Id == capture.Id);
        Assert.True(await driver.ReleaseCaptureAsync(domain.Uuid, capture.Id, CaptureOutcome.Committed, ct));
        Assert.DoesNotContain(events.Seen, e => e.Kind == DomainEventKind.CaptureBroken);

        // The kept checkpoint is a base: the next capture sees exactly the write made during the first one.
        var next = await driver.BeginCaptureAsync(CaptureRequest.Since(domain.Uuid, "drydock-f20-1", ["vda"]), ct);
        var vda = next.Disk("vda");
        Assert.False(vda.IsFull);
        Assert.Equal([(0L, 4 * MiB)], await LibvirtTestSupport.DirtyAsync(vda, ct));

        Assert.True(await driver.ReleaseCaptureAsync(domain.Uuid, next.Id, CaptureOutcome.Abandoned, ct));
        await LibvirtTestSupport.AssertCleanAsync(fixture, domain, ["drydock-f20-1"], ct);

        // Lifecycle events flow again: the registrations moved to the new connection.
        await LibvirtDaemon.VirshAsync(["resume", domain.Name], ct);
        await LibvirtDaemon.VirshAsync(["suspend", domain.Name], ct);
        await events.WaitForAsync(e => e.Kind == DomainEventKind.Resumed && e.DomainId == domain.Uuid, ct);
        await events.WaitForAsync(e => e.Kind == DomainEventKind.Paused && e.DomainId == domain.Uuid, ct);
    }

    [Fact]
    public async Task F20_libvirtd_restart_while_qemu_dies_breaks_the_capture_and_it_cannot_be_committed()
    {
        var ct = TestContext.Current.CancellationToken;
        await using var domain = await fixture.CreateDomainAsync(cancellationToken: ct);
        await using var driver = await LibvirtTestSupport.ConnectAsync(fixture, ct);
        await using var events = new EventRecorder(driver);
        var capture = await driver.BeginCaptureAsync(CaptureRequest.Full(domain.Uuid, ["vda", "vdb"], "drydock-f20-2"), ct);

        // Neither the job nor the export survives this: QEMU is gone before libvirtd comes back.
        await fixture.Daemon.RestartAsync(() => domain.KillQemuProcessAsync(ct), ct);

        var broken = await events.WaitForAsync(e => e.Kind == DomainEventKind.CaptureBroken, ct);
        Assert.Equal(capture.Id, broken.CaptureId);
        Assert.Equal(domain.Uuid, broken.DomainId);

        var refused = await Assert.ThrowsAsync<CaptureFailedException>(() => driver.ReleaseCaptureAsync(domain.Uuid, capture.Id, CaptureOutcome.Committed, ct));
        Assert.Contains(capture.Id, refused.Message, StringComparison.Ordinal);
        Assert.Contains("libvirtd", refused.Message, StringComparison.Ordinal);
        Assert.Contains((await driver.GetDomainAsync(domain.Uuid, ct)).State, new[] { DomainState.ShutOff, DomainState.Crashed });
        await LibvirtTestSupport.AssertCleanAsync(fixture, domain, [], ct);
    }

    /// <summary>Records a driver's events from construction on.</summary>
    private sealed class EventRecorder : IAsyncDisposable
    {
        private readonly CancellationTokenSource _stop = new();
        private readonly List<DomainEvent> _seen = [];
        private readonly Task _reader;

        public EventRecorder(IHypervisorDriver driver)
        {
            var stream = driver.WatchEventsAsync(_stop.Token);
            _reader = Task.Run(async () =>
            {
                try
                {
                    await foreach (var e in stream)
                    {
                        lock (_seen)
                        {
                            _seen.Add(e);
                        }
                    }
                }
                catch (OperationCanceledException)
                {
                    // Stopped.
                }
            });
        }

        public IReadOnlyList<DomainEvent> Seen
        {
            get
            {
                lock (_seen)
                {
                    return [.. _seen];
                }
            }
        }

        public async Task<DomainEvent> WaitForAsync(Func<DomainEvent, bool> match, CancellationToken cancellationToken)
        {
            var waited = System.Diagnostics.Stopwatch.StartNew();
            while (true)
            {
                if (Seen.FirstOrDefault(match) is { } found)
                {
                    return found;
                }

                Assert.True(waited.Elapsed < EventWait, $"No such event within {EventWait.TotalSeconds} s; seen: {string.Join(", ", Seen.Select(e => e.Kind))}");
                await Task.Delay(50, cancellationToken);
            }
        }

        public async ValueTask DisposeAsync()
        {
            await _stop.CancelAsync();
            await _reader;
            _stop.Dispose();
        }
    }
}
