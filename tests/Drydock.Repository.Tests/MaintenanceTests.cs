using System.Security.Cryptography;
using Drydock.Repository.Format;
using Drydock.Repository.Maintenance;
using Drydock.Storage;
using Xunit;
using static Drydock.Repository.Tests.TestRepo;

namespace Drydock.Repository.Tests;

/// <summary>Verify (F32, F33), prune (F39, retention rules) and GC.</summary>
public sealed class MaintenanceTests
{
    private static PointRef P(long sequence, Guid? domain = null) => new("default", domain ?? DomainA, sequence);

    [Fact]
    public async Task Verify_lists_every_point_that_needs_a_missing_chunk_with_disk_and_range()
    {
        // F33: two points share the chunk; both are listed, with the byte range.
        await using var t = await CreateAsync();
        var v1 = Image(8, 41);
        await t.BackupFullAsync(DomainA, v1);
        var v2 = (byte[])v1.Clone();
        v2[6 * ChunkSize] ^= 1;
        await t.BackupIncrementalAsync(DomainA, 1, v1, v2);
        var shared = (await (await t.Repository.OpenPointAsync(P(1), Ct)).OpenDiskAsync("vda", Ct)).IdOf(1);
        await t.Memory.DeleteAsync(ObjectNames.Chunk(shared), null, Ct);

        var report = await t.Repository.VerifyAsync(new VerifyOptions(), Ct);
        Assert.False(report.Ok);
        Assert.Equal("missing", report.BadChunks[shared]);
        var damaged = report.Damaged.ToList();
        Assert.Equal([1L, 2L], damaged.Select(p => p.Sequence));
        Assert.All(damaged, p =>
        {
            var problem = Assert.Single(p.Problems);
            Assert.Equal("vda", problem.Disk);
            Assert.Equal(ChunkSize, problem.Offset);
            Assert.Equal(ChunkSize, problem.Length);
            Assert.Equal(shared.ToString(), problem.ChunkId);
        });
        Assert.NotNull(report.RecordName);
        Assert.Contains(ObjectNames.Quarantine(shared), t.Names(ObjectNames.QuarantinePrefix));
    }

    [Fact]
    public async Task After_verify_finds_a_flipped_chunk_the_next_backup_re_uploads_it_instead_of_reusing_it()
    {
        // F32.
        await using var t = await CreateAsync();
        var v1 = Image(8, 42);
        await t.BackupFullAsync(DomainA, v1);
        var bad = (await (await t.Repository.OpenPointAsync(P(1), Ct)).OpenDiskAsync("vda", Ct)).IdOf(5);
        t.Memory.Tamper(ObjectNames.Chunk(bad), b => { b[40] ^= 4; return b; });

        var report = await t.Repository.VerifyAsync(new VerifyOptions(), Ct);
        Assert.Contains("tampered", report.BadChunks[bad], StringComparison.Ordinal);

        // The next incremental (nothing changed) is told to resubmit entry 5; it repairs the object.
        await using (var session = await t.Repository.BeginPointAsync(new Write.PointRequest { DomainId = DomainA, DomainName = "a", WriterId = "w" }, Ct))
        {
            var disk = await session.AddDiskAsync(new Write.DiskRequest { Name = "vda", Identity = "img-vda", VirtualSize = v1.Length, Level = DiskBackupLevel.Incremental, ParentSequence = 1 }, Ct);
            Assert.Equal([5L], disk.RefreshRequired);
            await disk.WriteChunkAsync(5, v1.AsMemory(5 * ChunkSize, ChunkSize), Ct);
            await session.CommitAsync(Ct);
        }

        Assert.Empty(t.Names(ObjectNames.QuarantinePrefix));
        Assert.Equal(v1, await t.RestoreAsync(DomainA, 2));
        Assert.Equal(v1, await t.RestoreAsync(DomainA, 1)); // the repaired object heals the old point too
        Assert.True((await t.Repository.VerifyAsync(new VerifyOptions(), Ct)).Ok);
    }

    [Fact]
    public async Task An_incremental_that_ignores_a_quarantined_parent_chunk_is_refused()
    {
        await using var t = await CreateAsync();
        var v1 = Image(8, 43);
        await t.BackupFullAsync(DomainA, v1);
        var bad = (await (await t.Repository.OpenPointAsync(P(1), Ct)).OpenDiskAsync("vda", Ct)).IdOf(1);
        await t.Memory.DeleteAsync(ObjectNames.Chunk(bad), null, Ct);
        await t.Repository.VerifyAsync(new VerifyOptions(), Ct);
        await using var session = await t.Repository.BeginPointAsync(new Write.PointRequest { DomainId = DomainA, DomainName = "a", WriterId = "w" }, Ct);
        await session.AddDiskAsync(new Write.DiskRequest { Name = "vda", Identity = "img-vda", VirtualSize = v1.Length, Level = DiskBackupLevel.Incremental, ParentSequence = 1 }, Ct);
        var e = await Assert.ThrowsAsync<CommitRefusedException>(() => session.CommitAsync(Ct));
        Assert.Contains("quarantined", e.Message, StringComparison.Ordinal);
        Assert.Equal(ChunkSize, e.Offset);
    }

    [Fact]
    public async Task Sampled_verify_reads_about_the_requested_share_of_chunks_and_still_checks_every_manifest()
    {
        await using var t = await CreateAsync();
        var image = new byte[200 * ChunkSize];
        RandomNumberGenerator.Fill(image);
        await t.BackupFullAsync(DomainA, image);
        var report = await t.Repository.VerifyAsync(new VerifyOptions { SamplePercent = 25, Seed = 7 }, Ct);
        Assert.InRange(report.Record.ChunksChecked, 25, 80);
        Assert.Single(report.Record.Points);
        Assert.True(report.Ok);
    }

    [Fact]
    public async Task A_flood_of_junk_newer_points_never_makes_prune_delete_the_last_verified_good_point()
    {
        // F39.
        await using var t = await CreateAsync();
        var image = Image(4, 44);
        await t.BackupFullAsync(DomainA, image);
        Assert.True((await t.Repository.VerifyAsync(new VerifyOptions(), Ct)).Ok);
        for (var i = 0; i < 4; i++)
        {
            t.Clock.Advance(TimeSpan.FromHours(1));
            await t.BackupFullAsync(DomainA, Image(4, 45 + i));
        }

        for (var seq = 6; seq < 26; seq++)
        {
            await t.Memory.PutAsync(ObjectNames.Manifest(P(seq)), RandomNumberGenerator.GetBytes(200), BlobCondition.CreateOnly, Ct);
        }

        var report = await t.Repository.PruneAsync(new RetentionPolicy { KeepLast = 1 }, new PruneOptions(), Ct);
        Assert.Equal(20, report.Unreadable.Count);
        Assert.Contains("newest verified good point", report.Kept[P(1)]);
        Assert.Contains("newest (base of the next incremental)", report.Kept[P(5)]);
        Assert.Equal([P(2), P(3), P(4)], report.Removed.OrderBy(p => p.Sequence).ToList());
        Assert.Equal(image, await t.RestoreAsync(DomainA, 1));
        Assert.Equal(20, t.Names(ObjectNames.DomainPoints("default", DomainA)).Count(n => !ObjectNames.TryParsePoint(n, ObjectNames.PointsPrefix, out var p) || p.Sequence > 5));
    }

    [Fact]
    public async Task Prune_dry_run_deletes_nothing()
    {
        await using var t = await CreateAsync();
        await t.BackupFullAsync(DomainA, Image(2, 46));
        await t.BackupFullAsync(DomainA, Image(2, 47));
        var report = await t.Repository.PruneAsync(new RetentionPolicy { KeepLast = 1 }, new PruneOptions { DryRun = true }, Ct);
        Assert.Equal([P(1)], report.Removed);
        Assert.Equal(2, (await t.Repository.ListPointsAsync(cancellationToken: Ct)).Count);
    }

    [Fact]
    public async Task Prune_with_an_empty_policy_is_refused_and_removes_nothing()
    {
        // An empty policy used to mean "keep only the newest point": one forgotten option away from losing every other point.
        await using var t = await CreateAsync();
        await t.BackupFullAsync(DomainA, Image(2, 46));
        await t.BackupFullAsync(DomainA, Image(2, 47));
        var e = await Assert.ThrowsAsync<ArgumentException>(() => t.Repository.PruneAsync(new RetentionPolicy(), new PruneOptions(), Ct));
        Assert.Contains("at least one rule", e.Message, StringComparison.Ordinal);
        await Assert.ThrowsAsync<ArgumentException>(() => t.Repository.PruneAsync(new RetentionPolicy { KeepLast = -1, KeepDaily = 3 }, new PruneOptions(), Ct));
        Assert.Equal(2, (await t.Repository.ListPointsAsync(cancellationToken: Ct)).Count);
    }

    [Fact]
    public async Task Prune_then_gc_frees_only_what_no_kept_point_needs_and_kept_points_restore_exactly()
    {
        await using var t = await CreateAsync();
        var images = new List<byte[]>();
        var previous = Image(8, 48);
        await t.BackupFullAsync(DomainA, previous);
        images.Add(previous);
        for (var i = 0; i < 4; i++)
        {
            t.Clock.Advance(TimeSpan.FromDays(1));
            var next = (byte[])previous.Clone();
            RandomNumberGenerator.Fill(next.AsSpan(((i % 7) + 1) * ChunkSize, 1000));
            await t.BackupIncrementalAsync(DomainA, i + 1, previous, next);
            images.Add(next);
            previous = next;
        }

        var before = t.Names(ObjectNames.ChunksPrefix).Count();
        await t.Repository.PruneAsync(new RetentionPolicy { KeepLast = 2 }, new PruneOptions(), Ct);

        t.Clock.Advance(TimeSpan.FromDays(3));
        var gc = await t.Repository.CollectGarbageAsync(new GcOptions(), Ct);
        Assert.True(gc.DeletedChunks > 0);
        Assert.True(gc.DeletedIndexes >= 3);
        Assert.Equal(before - gc.DeletedChunks, t.Names(ObjectNames.ChunksPrefix).Count());
        Assert.Equal(images[3], await t.RestoreAsync(DomainA, 4));
        Assert.Equal(images[4], await t.RestoreAsync(DomainA, 5));
        Assert.True((await t.Repository.VerifyAsync(new VerifyOptions(), Ct)).Ok);

        // The next incremental on top of the survivors works.
        var v6 = (byte[])images[4].Clone();
        v6[0] = 1;
        await t.BackupIncrementalAsync(DomainA, 5, images[4], v6);
        Assert.Equal(v6, await t.RestoreAsync(DomainA, 6));
    }

    [Fact]
    public async Task Gc_refuses_to_run_when_a_manifest_is_unreadable()
    {
        await using var t = await CreateAsync();
        await t.BackupFullAsync(DomainA, Image(2, 49));
        await t.Memory.PutAsync(ObjectNames.Manifest(P(2)), new byte[] { 1 }, BlobCondition.CreateOnly, Ct);
        t.Clock.Advance(TimeSpan.FromDays(10));
        var e = await Assert.ThrowsAsync<RepositoryException>(() => t.Repository.CollectGarbageAsync(new GcOptions(), Ct));
        Assert.Equal(P(2), e.Point);
    }

    [Fact]
    public async Task Gc_grace_must_exceed_the_longest_backup_session()
    {
        await using var t = await CreateAsync();
        await Assert.ThrowsAsync<ArgumentException>(() => t.Repository.CollectGarbageAsync(new GcOptions { Grace = TimeSpan.FromHours(1) }, Ct));
    }

    [Fact]
    public async Task Prune_and_gc_exclude_each_other_through_the_maintenance_lease()
    {
        await using var t = await CreateAsync();
        await using var held = await RepositoryLease.AcquireAsync(t.Store, ObjectNames.MaintenanceLease, "other-host", TimeSpan.FromHours(1), TimeSpan.FromMinutes(5), t.Clock, Ct);
        var e = await Assert.ThrowsAsync<RepositoryLeaseException>(() => t.Repository.CollectGarbageAsync(new GcOptions(), Ct));
        Assert.Contains("other-host", e.Message, StringComparison.Ordinal);
        await Assert.ThrowsAsync<RepositoryLeaseException>(() => t.Repository.PruneAsync(new RetentionPolicy { KeepLast = 1 }, new PruneOptions(), Ct));

        // Expired (beyond the skew margin): taken over with a higher epoch.
        t.Clock.Advance(TimeSpan.FromHours(2));
        await using var taken = await RepositoryLease.AcquireAsync(t.Store, ObjectNames.MaintenanceLease, "me", TimeSpan.FromHours(1), TimeSpan.FromMinutes(5), t.Clock, Ct);
        Assert.Equal(2, taken.Document.Epoch);
        await Assert.ThrowsAsync<RepositoryLeaseException>(() => held.RenewAsync(Ct));
    }

    [Fact]
    public async Task A_lease_whose_holder_process_on_this_host_is_gone_is_taken_over_before_it_expires()
    {
        await using var t = await CreateAsync();
        const string Name = "locks/domains/default/00000000-0000-0000-0000-000000000001";
        string holder;
        await using (var mine = await RepositoryLease.AcquireAsync(t.Store, Name, "drydock@here", TimeSpan.FromHours(1), TimeSpan.FromMinutes(5), t.Clock, Ct))
        {
            holder = mine.Document.Holder;
        }

        // The same lease as a process of this host, boot and pid namespace wrote it, but that process has exited.
        Assert.Matches(@"^drydock@here \[host=\S+ boot=\S+ pidns=\d+ pid=\d+ start=\d+\]$", holder);
        var dead = System.Diagnostics.Process.Start("true")!;
        await dead.WaitForExitAsync(Ct);
        var deadHolder = System.Text.RegularExpressions.Regex.Replace(holder, @"pid=\d+ start=\d+", $"pid={dead.Id} start=1");
        await WriteLeaseAsync(t, Name, deadHolder);
        await using (var taken = await RepositoryLease.AcquireAsync(t.Store, Name, "drydock@here", TimeSpan.FromHours(1), TimeSpan.FromMinutes(5), t.Clock, Ct))
        {
            Assert.Equal(2, taken.Document.Epoch);
        }

        // A live holder (this very process), or one without the process suffix (another version), still excludes.
        foreach (var alive in new[] { holder, "drydock@elsewhere" })
        {
            await WriteLeaseAsync(t, Name, alive);
            var e = await Assert.ThrowsAsync<RepositoryLeaseException>(() => RepositoryLease.AcquireAsync(t.Store, Name, "drydock@here", TimeSpan.FromHours(1), TimeSpan.FromMinutes(5), t.Clock, Ct));
            Assert.Contains($"delete the object '{Name}'", e.Message, StringComparison.Ordinal);
        }
    }

    [Fact]
    public void Retention_keeps_the_newest_point_of_each_period()
    {
        var start = new DateTimeOffset(2026, 1, 1, 0, 0, 0, TimeSpan.Zero);
        var points = Enumerable.Range(1, 60)
            .Select(i => new RetentionCandidate(P(i), start.AddHours(12 * i), Protected: i == 3, VerifiedGood: false))
            .ToList();
        var decision = Retention.Decide(points, new RetentionPolicy { KeepDaily = 3, KeepWeekly = 2, KeepMonthly = 2 });
        var kept = decision.Where(d => d.Value.Count > 0).Select(d => d.Key.Sequence).Order().ToList();

        // Points every 12 h from Jan 1 12:00 to Jan 31 00:00: daily keeps the last of Jan 31, 30, 29 (#60, #59, #57);
        // weekly the last of ISO weeks 5 and 4 (#60; #49 = Sunday Jan 25 12:00); monthly January (#60) and nothing older; #3 is protected.
        Assert.Equal([3L, 49, 57, 59, 60], kept);
        Assert.Contains("protected", decision[P(3)]);
        Assert.Contains(decision[P(60)], r => r.StartsWith("monthly", StringComparison.Ordinal));
    }

    private static async Task WriteLeaseAsync(TestRepo t, string name, string holder)
    {
        var now = t.Clock.GetUtcNow();
        var document = new LeaseDocument { Holder = holder, Token = "t", Epoch = 1, AcquiredAt = now, ExpiresAt = now.AddHours(1) };
        await t.Store.PutAsync(name, System.Text.Json.JsonSerializer.SerializeToUtf8Bytes(document, RepositoryJsonContext.Default.LeaseDocument), BlobCondition.Overwrite, Ct);
    }
}
