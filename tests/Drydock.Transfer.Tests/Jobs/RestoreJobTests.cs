using Drydock.Hypervisor;
using Drydock.Transfer.Jobs;
using Drydock.Transfer.Restore;
using Xunit;
using static Drydock.Transfer.Tests.Jobs.JobHarness;

namespace Drydock.Transfer.Tests.Jobs;

public sealed class RestoreJobTests
{
    [Fact]
    public async Task Restore_into_a_running_domain_is_refused_F48()
    {
        await using var h = await CreateAsync();

        var error = await Assert.ThrowsAsync<TransferRequestException>(() =>
            h.Restorer().IntoDomainAsync(new RestoreJobRequest { Domain = h.Domain.Id }, h.Driver, h.Domain.Id, changedOnly: true, cancellationToken: Ct));

        Assert.Contains("stop or pause it first", error.Message, StringComparison.Ordinal);
        Assert.Null(h.Domain.RestoreId);
    }

    [Fact]
    public async Task Unknown_domain_has_no_points()
    {
        await using var h = await CreateAsync();

        Assert.Empty(await h.Restorer().FindPointsAsync("nobody", cancellationToken: Ct));
        await Assert.ThrowsAsync<TransferRequestException>(() =>
            h.Restorer().ToDirectoryAsync(new RestoreJobRequest { Domain = "nobody" }, Path.GetTempPath(), DiskImageFormat.Raw, cancellationToken: Ct));
    }

    [Fact]
    public async Task Points_are_found_by_uuid_and_by_name()
    {
        await using var h = await CreateAsync();
        await h.FillAsync();
        await h.BackupAsync();
        await h.BackupAsync();

        var byId = await h.Restorer().FindPointsAsync(h.Domain.Id, cancellationToken: Ct);
        var byName = await h.Restorer().FindPointsAsync("vm-1", cancellationToken: Ct);

        Assert.Equal([1L, 2L], byId.Select(p => p.Sequence));
        Assert.Equal(byId, byName);
    }

    [Fact]
    public async Task Changed_only_restore_into_a_paused_domain_writes_only_differing_chunks()
    {
        await using var h = await CreateAsync();
        await h.FillAsync();
        var (point, images) = await h.BackupAndImageAsync();
        var touched = await h.WorkAsync(6);
        await h.Domain.DestroyAsync(Ct);
        await h.Domain.StartAsync(paused: true, Ct);

        var result = await h.Restorer().IntoDomainAsync(new RestoreJobRequest { Domain = "vm-1" }, h.Driver, h.Domain.Id, changedOnly: true, cancellationToken: Ct);

        var disk = Assert.Single(result.Disks).Result;
        Assert.Equal(point.Point, result.Point);
        Assert.InRange(disk.ChunksWritten + disk.ChunksZeroed, 1, touched["vda"].Count);
        var after = await h.ImageAsync("vda");
        Assert.True(images["vda"].AsSpan().SequenceEqual(after), "the disk equals the point after the restore");
        Assert.Null(h.Domain.RestoreId); // the export is closed
    }

    [Fact]
    public async Task A_shut_off_domain_is_started_paused_for_the_restore_and_left_shut_off()
    {
        await using var h = await CreateAsync();
        await h.FillAsync();
        var (_, images) = await h.BackupAndImageAsync();
        await h.WorkAsync(6);
        await h.Domain.DestroyAsync(Ct);

        var result = await h.Restorer().IntoDomainAsync(new RestoreJobRequest { Domain = "vm-1" }, h.Driver, h.Domain.Id, changedOnly: true, cancellationToken: Ct);

        Assert.True(Assert.Single(result.Disks).Result.ChunksWritten + result.Disks[0].Result.ChunksZeroed > 0);
        Assert.Equal(Drydock.Hypervisor.DomainState.ShutOff, h.Domain.State);
        Assert.Null(h.Domain.RestoreId);
        var after = await h.ImageAsync("vda");
        Assert.True(images["vda"].AsSpan().SequenceEqual(after), "the disk equals the point after the restore");
    }

    [Fact]
    public async Task Restore_into_a_disk_of_another_size_is_refused()
    {
        await using var h = await CreateAsync();
        await h.FillAsync();
        await h.BackupAsync();
        await h.Domain.DestroyAsync(Ct);
        await h.Domain.StartAsync(paused: true, Ct);
        await h.Domain.ResizeDiskAsync("vda", DiskSize * 2, Ct);

        var error = await Assert.ThrowsAsync<TransferRequestException>(() =>
            h.Restorer().IntoDomainAsync(new RestoreJobRequest { Domain = h.Domain.Id }, h.Driver, h.Domain.Id, changedOnly: false, cancellationToken: Ct));

        Assert.Equal("vda", error.Disk);
        Assert.Null(h.Domain.RestoreId);
    }

    [Fact]
    public async Task Restore_to_a_directory_never_overwrites_an_image()
    {
        await using var h = await CreateAsync();
        await h.FillAsync();
        await h.BackupAsync();
        var directory = Directory.CreateTempSubdirectory("drydock-restore-").FullName;
        try
        {
            await File.WriteAllTextAsync(Path.Combine(directory, "vda.raw"), "keep me", Ct);

            await Assert.ThrowsAsync<TransferRequestException>(() =>
                h.Restorer().ToDirectoryAsync(new RestoreJobRequest { Domain = h.Domain.Id }, directory, DiskImageFormat.Raw, cancellationToken: Ct));

            Assert.Equal("keep me", await File.ReadAllTextAsync(Path.Combine(directory, "vda.raw"), Ct));
        }
        finally
        {
            Directory.Delete(directory, recursive: true);
        }
    }

    [Fact]
    public async Task Domain_state_is_checked_before_anything_else()
    {
        // A running domain is refused even when the point does not exist: nothing is looked up or opened.
        await using var h = await CreateAsync();
        Assert.Equal(DomainState.Running, h.Domain.State);

        await Assert.ThrowsAsync<TransferRequestException>(() =>
            h.Restorer().IntoDomainAsync(new RestoreJobRequest { Domain = "nobody", Sequence = 9 }, h.Driver, h.Domain.Id, changedOnly: false, cancellationToken: Ct));
    }
}
