using System.Security.Cryptography;
using Drydock.Repository.Format;
using Drydock.Repository.Maintenance;
using Drydock.Repository.Write;
using Drydock.Storage;
using Xunit;
using static Drydock.Repository.Tests.TestRepo;

namespace Drydock.Repository.Tests;

/// <summary>Lineage (F40, cycles, foreign parents) and writers racing each other, the store, and GC (F28-F31, F35, F36).</summary>
public sealed class LineageAndConcurrencyTests
{
    private static PointRef P(long sequence) => new("default", DomainA, sequence);

    private static async Task<(TestRepo T, byte[] V1, byte[] V2, byte[] V3)> ChainAsync()
    {
        var t = await CreateAsync();
        var v1 = Image(8, 21);
        var v2 = (byte[])v1.Clone();
        RandomNumberGenerator.Fill(v2.AsSpan(ChunkSize, 100));
        var v3 = (byte[])v2.Clone();
        RandomNumberGenerator.Fill(v3.AsSpan(5 * ChunkSize, 100));
        await t.BackupFullAsync(DomainA, v1);
        await t.BackupIncrementalAsync(DomainA, 1, v1, v2);
        await t.BackupIncrementalAsync(DomainA, 2, v2, v3);
        return (t, v1, v2, v3);
    }

    [Fact]
    public async Task A_lost_middle_point_refuses_restores_past_the_gap_and_earlier_points_still_restore()
    {
        // F40.
        var (t, v1, _, _) = await ChainAsync();
        await using var _ = t;
        await t.Memory.DeleteAsync(ObjectNames.Manifest(P(2)), null, Ct);
        var e = await Assert.ThrowsAsync<LineageBrokenException>(() => t.Repository.OpenPointAsync(P(3), Ct));
        Assert.Contains("parent #2 is missing", e.Message, StringComparison.Ordinal);
        Assert.Equal("vda", e.Disk);
        Assert.Equal(v1, await t.RestoreAsync(DomainA, 1));
    }

    [Fact]
    public async Task A_pruned_middle_point_leaves_a_tombstone_and_later_points_restore()
    {
        var (t, v1, _, v3) = await ChainAsync();
        await using var _ = t;
        var report = await t.Repository.PruneAsync(new RetentionPolicy { KeepLast = 1 }, new PruneOptions { Protected = new HashSet<PointRef> { P(1) } }, Ct);
        Assert.Equal([P(2)], report.Removed);
        Assert.Single(t.Names(ObjectNames.TombstonesPrefix));
        Assert.Equal(v3, await t.RestoreAsync(DomainA, 3));
        Assert.Equal(v1, await t.RestoreAsync(DomainA, 1));
    }

    [Fact]
    public async Task A_parent_that_is_not_older_is_a_cycle()
    {
        var (t, _, _, _) = await ChainAsync();
        await using var _ = t;
        var manifest = await t.Repository.ReadManifestAsync(P(2), Ct);
        var disk = manifest.Disks[0];
        var looping = new DiskManifest
        {
            Name = disk.Name, Identity = disk.Identity, VirtualSize = disk.VirtualSize, ChunkSize = disk.ChunkSize, Level = DiskBackupLevel.Incremental,
            ParentSequence = 3, IndexId = disk.IndexId, Stats = disk.Stats,
        };
        var forged = new PointManifest
        {
            Format = manifest.Format, Version = 1, RepositoryId = manifest.RepositoryId, Tenant = manifest.Tenant, DomainId = manifest.DomainId,
            DomainName = manifest.DomainName, Sequence = 2, WriterId = "w", CreatedAt = manifest.CreatedAt, FinishedAt = manifest.FinishedAt,
            DomainXml = "", Disks = [looping],
        };
        await t.Repository.WriteSignedAsync(ObjectNames.Manifest(P(2)), ObjectType.Manifest, "manifest", forged, RepositoryJsonContext.Default.PointManifest, BlobCondition.Overwrite, Ct);
        var e = await Assert.ThrowsAsync<LineageBrokenException>(() => t.Repository.OpenPointAsync(P(2), Ct));
        Assert.Contains("cycle", e.Message, StringComparison.Ordinal);
    }

    [Fact]
    public async Task An_incremental_against_a_different_disk_identity_is_refused()
    {
        await using var t = await CreateAsync();
        var v1 = Image(4, 22);
        await t.BackupFullAsync(DomainA, v1);
        await using var session = await t.Repository.BeginPointAsync(new PointRequest { DomainId = DomainA, DomainName = "a", WriterId = "w" }, Ct);
        var e = await Assert.ThrowsAsync<LineageBrokenException>(() => session.AddDiskAsync(new DiskRequest { Name = "vda", Identity = "replaced-image", VirtualSize = v1.Length, Level = DiskBackupLevel.Incremental, ParentSequence = 1 }, Ct));
        Assert.Contains("identity changed", e.Message, StringComparison.Ordinal);
        await Assert.ThrowsAsync<LineageBrokenException>(() => session.AddDiskAsync(new DiskRequest { Name = "vda", Identity = "img-vda", VirtualSize = v1.Length - ChunkSize, Level = DiskBackupLevel.Incremental, ParentSequence = 1 }, Ct));
    }

    [Fact]
    public async Task Differential_points_take_unchanged_chunks_from_the_full()
    {
        await using var t = await CreateAsync();
        var v1 = Image(8, 23);
        await t.BackupFullAsync(DomainA, v1);
        var v2 = (byte[])v1.Clone();
        v2[3 * ChunkSize] ^= 0xFF;
        await t.BackupIncrementalAsync(DomainA, 1, v1, v2);
        var v3 = (byte[])v2.Clone();
        v3[6 * ChunkSize] ^= 0xFF;
        var manifest = await t.BackupIncrementalAsync(DomainA, 1, v1, v3, level: DiskBackupLevel.Differential);
        Assert.Equal(2, manifest.Disks[0].Stats.SubmittedChunks);
        Assert.Equal(v3, await t.RestoreAsync(DomainA, 3));
    }

    [Fact]
    public async Task A_second_writer_for_the_same_domain_is_refused_while_the_first_holds_the_lease()
    {
        // F16/F30: one backup per domain at a time.
        await using var t = await CreateAsync();
        await using var first = await t.Repository.BeginPointAsync(new PointRequest { DomainId = DomainA, DomainName = "a", WriterId = "job-1" }, Ct);
        var e = await Assert.ThrowsAsync<RepositoryLeaseException>(() => t.Repository.BeginPointAsync(new PointRequest { DomainId = DomainA, DomainName = "a", WriterId = "job-2" }, Ct));
        Assert.Contains("job-1", e.Message, StringComparison.Ordinal);

        // Another domain is independent.
        await using var other = await t.Repository.BeginPointAsync(new PointRequest { DomainId = DomainB, DomainName = "b", WriterId = "job-3" }, Ct);
    }

    [Fact]
    public async Task A_stale_writer_whose_lease_was_taken_over_is_fenced_and_exactly_one_point_commits()
    {
        // F30/F42: writer A stalls past its lease; writer B takes over and commits the same sequence.
        await using var t = await CreateAsync();
        var image = Image(4, 24);
        await using var stale = await t.Repository.BeginPointAsync(new PointRequest { DomainId = DomainA, DomainName = "a", WriterId = "job-A" }, Ct);
        var staleDisk = await stale.AddDiskAsync(new DiskRequest { Name = "vda", Identity = "img-vda", VirtualSize = image.Length }, Ct);
        await staleDisk.WriteAllAsync(new MemoryStream(image), Ct);

        t.Clock.Advance(t.Repository.Options.LeaseDuration + t.Repository.Options.ClockSkewMargin + TimeSpan.FromMinutes(1));
        var winner = await t.BackupFullAsync(DomainA, image, writer: "job-B");
        Assert.Equal(1, winner.Sequence);

        await Assert.ThrowsAsync<RepositoryLeaseException>(() => stale.CommitAsync(Ct));
        var only = await t.Repository.ReadManifestAsync(P(1), Ct);
        Assert.Equal("job-B", only.WriterId);
        Assert.Single(t.Names(ObjectNames.PointsPrefix));
    }

    [Fact]
    public async Task A_writer_killed_mid_upload_publishes_nothing_and_the_rerun_is_idempotent()
    {
        // F28: the store fails after a few chunk puts (as if the process died); retry with the same data.
        await using var t = await CreateAsync();
        var earlier = Image(4, 25);
        await t.BackupFullAsync(DomainB, earlier);
        var image = Image(12, 26);
        var chunkPuts = 0;
        t.Store.OnPut = (name, _) => name.StartsWith(ObjectNames.ChunksPrefix, StringComparison.Ordinal) && Interlocked.Increment(ref chunkPuts) > 3
            ? new BlobStoreUnavailableException("connection reset", t.Store.Location, name)
            : null;
        var e = await Assert.ThrowsAsync<CommitRefusedException>(() => t.BackupFullAsync(DomainA, image));
        Assert.Equal("vda", (e.InnerException as RepositoryException)?.Disk ?? e.Disk ?? "vda");
        Assert.Empty(t.Names(ObjectNames.DomainPoints("default", DomainA)));
        Assert.Empty(t.Names(ObjectNames.LocksPrefix + "domains/default/" + DomainA.ToString("D")));

        t.Store.OnPut = null;
        var manifest = await t.BackupFullAsync(DomainA, image);
        Assert.Equal(1, manifest.Sequence);
        Assert.True(manifest.Disks[0].Stats.DedupChunks >= 3, "chunks uploaded before the crash are reused");
        Assert.Equal(image, await t.RestoreAsync(DomainA, 1));
        Assert.Equal(earlier, await t.RestoreAsync(DomainB, 1));
    }

    [Fact]
    public async Task Racing_uploads_of_the_same_chunk_verify_the_existing_object_and_replace_it_if_bad()
    {
        // F29: the existence check says "absent", then another writer's object appears before our create-only put.
        await using var t = await CreateAsync();
        var image = Image(4, 27);
        var randomChunk = image.AsMemory(ChunkSize, ChunkSize);
        var id = t.Repository.Codec.ComputeId(randomChunk.Span);
        var name = ObjectNames.Chunk(id);
        t.Store.OnPut = (n, condition) =>
        {
            if (n == name && condition.Kind == BlobConditionKind.CreateOnly && !t.Memory.ExistsAsync(n, Ct).GetAwaiter().GetResult())
            {
                t.Memory.PutAsync(n, new byte[] { 9, 9, 9 }, BlobCondition.CreateOnly, Ct).GetAwaiter().GetResult();
            }

            return null;
        };
        await t.BackupFullAsync(DomainA, image);
        using (var stored = await t.Memory.GetAsync(name, 1 << 20, Ct))
        {
            Assert.True(stored.Length > 3, "the damaged object was replaced");
        }

        Assert.Equal(image, await t.RestoreAsync(DomainA, 1));
    }

    [Theory]
    [InlineData("throttled")]
    [InlineData("full")]
    public async Task Storage_failures_at_commit_fail_cleanly_and_earlier_points_stay_intact(string kind)
    {
        // F35 (throttling that outlasts the backend's retries) and F36 (disk full): CE before commit.
        await using var t = await CreateAsync();
        var earlier = Image(4, 28);
        await t.BackupFullAsync(DomainA, earlier);
        t.Store.OnPut = (name, _) => name.StartsWith(ObjectNames.IndexesPrefix, StringComparison.Ordinal)
            ? kind == "full" ? new BlobStoreFullException(t.Store.Location, name) : new BlobThrottledException(t.Store.Location, name, TimeSpan.FromSeconds(1))
            : null;
        var e = await Assert.ThrowsAnyAsync<BlobStoreException>(() => t.BackupFullAsync(DomainA, Image(4, 29)));
        Assert.Contains(t.Store.Location, e.Message, StringComparison.Ordinal);
        Assert.Equal([P(1)], await t.Repository.ListPointsAsync("default", DomainA, Ct));
        t.Store.OnPut = null;
        Assert.Equal(earlier, await t.RestoreAsync(DomainA, 1));
    }

    [Fact]
    public async Task Gc_running_while_a_backup_reuses_an_old_unreferenced_chunk_is_detected_at_commit()
    {
        // F31: an aborted session left chunks behind long ago; a new backup dedups against one of them; GC deletes it
        // before the new backup's index exists. The commit must notice and refuse, not publish a point with a hole.
        await using var t = await CreateAsync();
        var image = Image(4, 30);
        await using (var aborted = await t.Repository.BeginPointAsync(new PointRequest { DomainId = DomainB, DomainName = "b", WriterId = "old" }, Ct))
        {
            var d = await aborted.AddDiskAsync(new DiskRequest { Name = "vda", Identity = "i", VirtualSize = image.Length }, Ct);
            await d.WriteAllAsync(new MemoryStream(image), Ct);

            // WriteAllAsync returns once the chunks are queued and disposing drops what is still queued: wait until the
            // three data chunks (chunk 0 is zeros) are stored, as a session that died later than its uploads left them.
            await PollAsync(() => t.Names(ObjectNames.ChunksPrefix).Count() >= 3);
            Assert.Equal(3, t.Names(ObjectNames.ChunksPrefix).Count());
        }

        t.Clock.Advance(TimeSpan.FromDays(5));
        var checkedChunks = 0;
        t.Store.AfterExists = name =>
        {
            if (name.StartsWith(ObjectNames.ChunksPrefix, StringComparison.Ordinal))
            {
                Interlocked.Increment(ref checkedChunks);
            }
        };
        await using var session = await t.Repository.BeginPointAsync(new PointRequest { DomainId = DomainA, DomainName = "a", WriterId = "new" }, Ct);
        var disk = await session.AddDiskAsync(new DiskRequest { Name = "vda", Identity = "img-vda", VirtualSize = image.Length }, Ct);
        await disk.WriteAllAsync(new MemoryStream(image), Ct);

        // The writer dedups in the background: wait until it has found all three chunks present, or GC would delete
        // them first and the writer would simply upload them again (no race left to detect).
        await PollAsync(() => Volatile.Read(ref checkedChunks) >= 3);
        Assert.Equal(3, Volatile.Read(ref checkedChunks));
        t.Store.AfterExists = null;

        // GC runs now: the old chunks are unreferenced and older than the grace window.
        var gc = await t.Repository.CollectGarbageAsync(new GcOptions(), Ct);
        Assert.True(gc.DeletedChunks > 0);
        var e = await Assert.ThrowsAsync<CommitRefusedException>(() => session.CommitAsync(Ct));
        Assert.Contains("deleted by a concurrent GC", e.Message, StringComparison.Ordinal);
        Assert.Empty(await t.Repository.ListPointsAsync("default", DomainA, Ct));

        // The rerun uploads what is missing and commits.
        Assert.Equal(image, await BackupAndRestoreAsync(t, image));
    }

    [Fact]
    public async Task Gc_keeps_chunks_a_running_backup_uploaded_inside_the_grace_window()
    {
        // F31: fresh uploads have no index yet; the grace window protects them.
        await using var t = await CreateAsync();
        var image = Image(8, 31);
        await using var session = await t.Repository.BeginPointAsync(new PointRequest { DomainId = DomainA, DomainName = "a", WriterId = "w" }, Ct);
        var disk = await session.AddDiskAsync(new DiskRequest { Name = "vda", Identity = "img-vda", VirtualSize = image.Length }, Ct);
        await disk.WriteAllAsync(new MemoryStream(image), Ct);
        t.Clock.Advance(TimeSpan.FromHours(2));
        var gc = await t.Repository.CollectGarbageAsync(new GcOptions(), Ct);
        Assert.Equal(0, gc.DeletedChunks);
        Assert.True(gc.YoungUnreferenced > 0);
        await session.CommitAsync(Ct);
        Assert.Equal(image, await t.RestoreAsync(DomainA, 1));
    }

    [Fact]
    public async Task A_session_longer_than_its_limit_is_refused_at_commit()
    {
        await using var t = await CreateAsync();
        await using var session = await t.Repository.BeginPointAsync(new PointRequest { DomainId = DomainA, DomainName = "a", WriterId = "w" }, Ct);
        var disk = await session.AddDiskAsync(new DiskRequest { Name = "vda", Identity = "i", VirtualSize = ChunkSize }, Ct);
        disk.MarkZero(0);
        t.Clock.Advance(t.Repository.Options.MaxSessionDuration + TimeSpan.FromMinutes(1));
        var e = await Assert.ThrowsAsync<CommitRefusedException>(() => session.CommitAsync(Ct));
        Assert.Contains("over the limit", e.Message, StringComparison.Ordinal);
    }

    private static async Task<byte[]> BackupAndRestoreAsync(TestRepo t, byte[] image)
    {
        var manifest = await t.BackupFullAsync(DomainA, image, writer: "rerun");
        return await t.RestoreAsync(DomainA, manifest.Sequence);
    }

    // Polls (with a hang guard of about 5 s), not timed: background work the test waits for; the caller asserts after.
    private static async Task PollAsync(Func<bool> done)
    {
        for (var wait = 0; wait < 500 && !done(); wait++)
        {
            await Task.Delay(10, Ct);
        }
    }
}
