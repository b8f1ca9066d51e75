using Drydock.Hypervisor.Sim;
using Drydock.Nbd;
using Drydock.Nbd.Client;
using Drydock.Nbd.Protocol;
using Xunit;

namespace Drydock.Hypervisor.Tests.Sim;

/// <summary>What the simulator does beyond the driver contract: fleets, the deterministic guest, migration, faults.</summary>
public sealed class SimFleetTests
{
    private const ulong MiB = 1024 * 1024;

    private static CancellationToken Ct => TestContext.Current.CancellationToken;

    [Fact]
    public async Task A_fleet_of_hosts_and_domains_is_listed_per_host_with_repeatable_ids()
    {
        await using var first = new SimFleet(new SimFleetOptions { Seed = 42 });
        await using var second = new SimFleet(new SimFleetOptions { Seed = 42 });
        await first.PopulateAsync(hosts: 3, domainsPerHost: 4, disksPerDomain: 2, diskSize: 8 * MiB, Ct);
        await second.PopulateAsync(hosts: 3, domainsPerHost: 4, disksPerDomain: 2, diskSize: 8 * MiB, Ct);

        var ids = new List<string>();
        foreach (var host in first.Hosts)
        {
            await using var driver = host.Connect();
            var domains = await driver.ListDomainsAsync(Ct);
            Assert.Equal(4, domains.Count);
            Assert.All(domains, d => Assert.Equal((DomainState.Running, host.Name, 2), (d.State, d.HostName, d.Disks.Count)));
            ids.AddRange(domains.Select(d => d.Id));
        }

        Assert.Equal(12, ids.Distinct().Count());
        Assert.Equal(ids, second.Hosts.SelectMany(h => h.Domains).Select(d => d.Id));
        Assert.All(ids, id => Assert.True(Guid.TryParse(id, out _)));
    }

    [Fact]
    public async Task The_guest_workload_is_deterministic_and_an_incremental_lists_exactly_what_it_changed()
    {
        await using var fleet = new SimFleet();
        await fleet.PopulateAsync(1, 1, 2, 16 * MiB, Ct);
        var domain = fleet.Hosts[0].Domains[0];
        await using var driver = fleet.Hosts[0].Connect();
        var c1 = DrydockNames.NewCheckpointName(DateTimeOffset.UnixEpoch);
        await driver.CreateCheckpointAsync(domain.Id, c1, null, Ct);

        var operations = await domain.RunWorkloadAsync(new SimWorkload(7), 200, Ct);
        Assert.Equal(operations, new SimWorkload(7).Next(domain, 200));
        Assert.Contains(operations, o => o.Kind == SimGuestOperationKind.Trim);
        Assert.Contains(operations, o => o.Kind == SimGuestOperationKind.Zero);

        var capture = await driver.BeginCaptureAsync(CaptureRequest.Since(domain.Id, c1, ["vda", "vdb"]), Ct);
        foreach (var disk in capture.Disks)
        {
            var granularity = (ulong)disk.Granularity!.Value;
            var expected = Merge(operations.Where(o => o.Target == disk.Target).Select(o =>
            {
                var start = o.Offset / granularity * granularity;
                return (start, (o.Offset + o.Length + granularity - 1) / granularity * granularity - start);
            }));
            Assert.Equal(expected, await DirtyAsync(disk));
        }

        await driver.ReleaseCaptureAsync(domain.Id, capture.Id, CaptureOutcome.Abandoned, Ct);
    }

    [Fact]
    public async Task F07_a_migrated_domain_is_found_on_its_new_host_and_its_checkpoint_is_redefined_there()
    {
        await using var fleet = new SimFleet();
        await fleet.PopulateAsync(2, 1, 1, 8 * MiB, Ct);
        var (source, target) = (fleet.Hosts[0], fleet.Hosts[1]);
        var domain = source.Domains[0];
        await using var before = source.Connect();
        await using var after = target.Connect();
        var c1 = DrydockNames.NewCheckpointName(DateTimeOffset.UnixEpoch);
        await before.CreateCheckpointAsync(domain.Id, c1, null, Ct);
        var saved = await before.GetCheckpointXmlAsync(domain.Id, c1, Ct);
        var sourceEvents = before.WatchEventsAsync(Ct).GetAsyncEnumerator(Ct);
        var targetEvents = after.WatchEventsAsync(Ct).GetAsyncEnumerator(Ct);

        await domain.MigrateAsync(target, Ct);

        Assert.True(await sourceEvents.MoveNextAsync());
        Assert.Equal((domain.Id, DomainEventKind.Migrated), (sourceEvents.Current.DomainId, sourceEvents.Current.Kind));
        Assert.True(await targetEvents.MoveNextAsync());
        Assert.Equal((domain.Id, DomainEventKind.Started), (targetEvents.Current.DomainId, targetEvents.Current.Kind));
        await Assert.ThrowsAsync<DomainNotFoundException>(() => before.GetDomainAsync(domain.Id, Ct));
        Assert.Equal(target.Name, (await after.GetDomainAsync(domain.Id, Ct)).HostName);

        // libvirt does not carry checkpoint metadata along: the bitmaps are there, the checkpoint must be redefined.
        Assert.False(Assert.Single(await after.ListCheckpointsAsync(domain.Id, Ct)).HasMetadata);
        var capture = await after.BeginCaptureAsync(CaptureRequest.Since(domain.Id, c1, ["vda"]), Ct);
        Assert.Equal(FullReadCode.CheckpointMissing, capture.Disk("vda").FullReason!.Code);
        await after.ReleaseCaptureAsync(domain.Id, capture.Id, CaptureOutcome.Abandoned, Ct);
        await after.RedefineCheckpointAsync(domain.Id, saved, Ct);
        capture = await after.BeginCaptureAsync(CaptureRequest.Since(domain.Id, c1, ["vda"]), Ct);
        Assert.False(capture.Disk("vda").IsFull);
        await after.ReleaseCaptureAsync(domain.Id, capture.Id, CaptureOutcome.Abandoned, Ct);
        await sourceEvents.DisposeAsync();
        await targetEvents.DisposeAsync();
    }

    [Fact]
    public async Task F08_a_migration_during_a_capture_breaks_it_and_its_release_still_cleans_up()
    {
        await using var fleet = new SimFleet();
        await fleet.PopulateAsync(2, 1, 1, 8 * MiB, Ct);
        var domain = fleet.Hosts[0].Domains[0];
        await using var driver = fleet.Hosts[0].Connect();
        var events = driver.WatchEventsAsync(Ct).GetAsyncEnumerator(Ct);
        var capture = await driver.BeginCaptureAsync(CaptureRequest.Full(domain.Id, ["vda"], DrydockNames.NewCheckpointName(DateTimeOffset.UnixEpoch)), Ct);

        await domain.MigrateAsync(fleet.Hosts[1], Ct);

        Assert.True(await events.MoveNextAsync());
        Assert.Equal((DomainEventKind.CaptureBroken, capture.Id), (events.Current.Kind, events.Current.CaptureId));
        await Assert.ThrowsAnyAsync<Exception>(async () =>
        {
            await using var client = await NbdClient.ConnectAsync(capture.Disk("vda").Endpoint, cancellationToken: Ct);
        });

        await using var there = fleet.Hosts[1].Connect();
        Assert.Single(await there.ListCapturesAsync(domain.Id, Ct));
        Assert.True(await there.ReleaseCaptureAsync(domain.Id, capture.Id, CaptureOutcome.Abandoned, Ct));
        Assert.Empty(await there.ListCheckpointsAsync(domain.Id, Ct));
        Assert.All(fleet.Hosts, h => Assert.DoesNotContain(h.ExportNames, e => e.Contains("-cap-", StringComparison.Ordinal)));
        await events.DisposeAsync();
    }

    [Fact]
    public async Task F17_running_out_of_fleece_breaks_the_capture_with_an_event_and_the_guest_keeps_writing()
    {
        await using var fleet = new SimFleet();
        await fleet.PopulateAsync(1, 1, 1, 8 * MiB, Ct);
        var host = fleet.Hosts[0];
        host.FleeceLimit = 256 * 1024;
        var domain = host.Domains[0];
        await domain.RunWorkloadAsync(new SimWorkload(1, new SimWorkloadOptions { ZeroWeight = 0, TrimWeight = 0 }), 100, Ct);
        await using var driver = host.Connect();
        var events = driver.WatchEventsAsync(Ct).GetAsyncEnumerator(Ct);
        var capture = await driver.BeginCaptureAsync(CaptureRequest.Full(domain.Id, ["vda"]), Ct);

        await domain.RunWorkloadAsync(new SimWorkload(2, new SimWorkloadOptions { ZeroWeight = 0, TrimWeight = 0 }), 100, Ct);

        Assert.True(await events.MoveNextAsync());
        Assert.Equal((DomainEventKind.CaptureBroken, capture.Id, "vda"), (events.Current.Kind, events.Current.CaptureId, events.Current.Target));
        await using (var client = await NbdClient.ConnectAsync(capture.Disk("vda").Endpoint, cancellationToken: Ct))
        {
            var error = await Assert.ThrowsAsync<NbdRequestException>(() => client.ReadAsync(0, new byte[4096], Ct));
            Assert.Contains("fleece", error.Message, StringComparison.Ordinal);
        }

        await driver.ReleaseCaptureAsync(domain.Id, capture.Id, CaptureOutcome.Abandoned, Ct);
        await events.DisposeAsync();
    }

    [Fact]
    public async Task F13_reverting_to_a_saved_image_restores_the_content_unseen_by_the_bitmaps_and_raises_the_generation()
    {
        await using var fleet = new SimFleet();
        await fleet.PopulateAsync(1, 1, 1, 8 * MiB, Ct);
        var domain = fleet.Hosts[0].Domains[0];
        var disk = domain.Disk("vda");
        await using var driver = fleet.Hosts[0].Connect();
        await domain.RunWorkloadAsync(new SimWorkload(3), 50, Ct);
        var saved = await disk.SaveImageAsync(Ct);
        var expected = new byte[8 * MiB];
        await disk.ReadAsync(0, expected, Ct);
        var c1 = DrydockNames.NewCheckpointName(DateTimeOffset.UnixEpoch);
        await driver.CreateCheckpointAsync(domain.Id, c1, null, Ct);
        await domain.RunWorkloadAsync(new SimWorkload(4), 50, Ct);
        var generation = (await driver.GetDomainAsync(domain.Id, Ct)).Disks[0].Generation;
        var dirtyBefore = (await driver.GetDiskHealthAsync(domain.Id, Ct))[0].ForCheckpoint(c1)!.DirtyBytes;

        await domain.RevertDiskAsync("vda", saved, Ct);

        var actual = new byte[8 * MiB];
        await disk.ReadAsync(0, actual, Ct);
        Assert.True(expected.AsSpan().SequenceEqual(actual));
        Assert.Equal(generation + 1, (await driver.GetDomainAsync(domain.Id, Ct)).Disks[0].Generation);
        Assert.Equal(dirtyBefore, (await driver.GetDiskHealthAsync(domain.Id, Ct))[0].ForCheckpoint(c1)!.DirtyBytes);
    }

    [Fact]
    public async Task Writes_to_a_capture_export_are_refused_and_a_stopped_domains_guest_export_is_gone()
    {
        await using var fleet = new SimFleet();
        await fleet.PopulateAsync(1, 1, 1, 8 * MiB, Ct);
        var domain = fleet.Hosts[0].Domains[0];
        await using var driver = fleet.Hosts[0].Connect();
        var capture = await driver.BeginCaptureAsync(CaptureRequest.Full(domain.Id, ["vda"]), Ct);
        await using (var client = await NbdClient.ConnectAsync(capture.Disk("vda").Endpoint, cancellationToken: Ct))
        {
            Assert.True(client.Export.IsReadOnly);
        }

        await driver.ReleaseCaptureAsync(domain.Id, capture.Id, CaptureOutcome.Abandoned, Ct);
        await driver.DestroyAsync(domain.Id, Ct);
        Assert.DoesNotContain(fleet.Hosts[0].ExportNames, e => e == domain.Name + "-vda");
        await Assert.ThrowsAsync<DomainStateException>(() => driver.BeginCaptureAsync(CaptureRequest.Full(domain.Id, ["vda"]), Ct));
    }

    private static async Task<List<(ulong Offset, ulong Length)>> DirtyAsync(CaptureDisk disk)
    {
        var options = new NbdClientOptions();
        options.MetaContexts.Add(disk.ChangedBlocksContext!);
        await using var client = await NbdClient.ConnectAsync(disk.Endpoint, options, Ct);
        var map = await client.MapAsync([disk.ChangedBlocksContext!], cancellationToken: Ct);
        return Merge(map[disk.ChangedBlocksContext!].Where(e => (e.Flags & NbdContexts.DirtyFlag) != 0).Select(e => (e.Offset, e.Length)));
    }

    private static List<(ulong Offset, ulong Length)> Merge(IEnumerable<(ulong Offset, ulong Length)> ranges)
    {
        var merged = new List<(ulong Offset, ulong Length)>();
        foreach (var (offset, length) in ranges.OrderBy(r => r.Offset))
        {
            if (merged.Count > 0 && merged[^1].Offset + merged[^1].Length >= offset)
            {
                var last = merged[^1];
                merged[^1] = (last.Offset, Math.Max(last.Offset + last.Length, offset + length) - last.Offset);
            }
            else
            {
                merged.Add((offset, length));
            }
        }

        return merged;
    }
}
