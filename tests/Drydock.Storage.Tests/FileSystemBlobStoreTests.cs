using Drydock.Storage.FileSystem;
using Xunit;

namespace Drydock.Storage.Tests;

public sealed class FileSystemBlobStoreTests : BlobStoreContract
{
    private string? _root;

    protected override Task<IBlobStore> CreateStoreAsync()
    {
        _root = Directory.CreateTempSubdirectory("drydock-fs-").FullName;
        return Task.FromResult<IBlobStore>(new FileSystemBlobStore(new FileSystemBlobStoreOptions { Root = _root }));
    }

    public override async ValueTask DisposeAsync()
    {
        await base.DisposeAsync();
        if (_root is not null)
        {
            Directory.Delete(_root, recursive: true);
        }
    }

    [Fact]
    public async Task A_writer_killed_before_publishing_leaves_no_visible_object_and_its_temp_file_is_cleaned()
    {
        // F28: simulate the state a killed writer leaves: a partial temp file, never linked into place.
        var temp = Path.Combine(_root!, ".tmp", "deadbeef.part");
        await File.WriteAllBytesAsync(temp, new byte[123], Ct);
        File.SetLastWriteTimeUtc(temp, new DateTime(2020, 1, 1, 0, 0, 0, DateTimeKind.Utc));
        Assert.Empty(await Store.ListAsync("", Ct).ToListAsync(Ct));

        var fs = (FileSystemBlobStore)Store;
        Assert.Equal(1, await fs.CleanTempFilesAsync(TimeSpan.FromHours(1), TimeProvider.System.GetUtcNow(), Ct));
        Assert.False(File.Exists(temp));
    }

    [Fact]
    public async Task An_error_names_the_object_under_the_store_without_a_doubled_slash()
    {
        // The store's location ends with '/': "file:///…/r/chunks/x", not "file:///…/r//chunks/x".
        var missing = await Assert.ThrowsAsync<BlobNotFoundException>(() => Store.GetAsync("chunks/ab/missing", BlobRange.All, 1024, Ct));
        Assert.EndsWith("/", Store.Location, StringComparison.Ordinal);
        Assert.Contains(Store.Location + "chunks/ab/missing", missing.Message, StringComparison.Ordinal);
        Assert.DoesNotContain("//chunks", missing.Message, StringComparison.Ordinal);
    }

    [Fact]
    public async Task A_cancelled_put_leaves_nothing_behind()
    {
        using var cts = new CancellationTokenSource();
        await cts.CancelAsync();
        await Assert.ThrowsAnyAsync<OperationCanceledException>(() => Store.PutAsync("c/x", new byte[1 << 20], BlobCondition.CreateOnly, cts.Token));
        Assert.False(await Store.ExistsAsync("c/x", Ct));
        Assert.Empty(Directory.EnumerateFiles(Path.Combine(_root!, ".tmp")));
    }

    [Fact]
    public async Task A_full_disk_is_a_typed_error_and_leaves_no_object_or_temp_file()
    {
        // F36 on a real filesystem: a 256 KiB tmpfs (needs root; skipped where mount is not permitted).
        var mountPoint = Directory.CreateTempSubdirectory("drydock-full-").FullName;
        if (!await TryRunAsync("mount", "-t", "tmpfs", "-o", "size=256k", "tmpfs", mountPoint))
        {
            Directory.Delete(mountPoint);
            Assert.Skip("mounting a tmpfs is not permitted here");
        }

        try
        {
            var store = new FileSystemBlobStore(new FileSystemBlobStoreOptions { Root = mountPoint });
            await store.PutAsync("small", new byte[1000], BlobCondition.CreateOnly, Ct);
            var e = await Assert.ThrowsAsync<BlobStoreFullException>(() => store.PutAsync("big/object", new byte[1 << 20], BlobCondition.CreateOnly, Ct));
            Assert.Equal("big/object", e.BlobName);
            Assert.False(await store.ExistsAsync("big/object", Ct));
            Assert.Empty(Directory.EnumerateFiles(Path.Combine(mountPoint, ".tmp")));
            using var small = await store.GetAsync("small", 10_000, Ct);
            Assert.Equal(1000, small.Length);
        }
        finally
        {
            await TryRunAsync("umount", mountPoint);
            Directory.Delete(mountPoint, recursive: true);
        }
    }

    private static async Task<bool> TryRunAsync(string file, params string[] args)
    {
        try
        {
            var start = new System.Diagnostics.ProcessStartInfo(file) { RedirectStandardError = true, UseShellExecute = false };
            foreach (var a in args)
            {
                start.ArgumentList.Add(a);
            }

            using var process = System.Diagnostics.Process.Start(start)!;
            await process.WaitForExitAsync(Ct);
            return process.ExitCode == 0;
        }
        catch (System.ComponentModel.Win32Exception)
        {
            return false;
        }
    }

    [Theory]
    [InlineData(256 * 1024)]
    [InlineData((2 * 1024 * 1024) + 44)]
    [InlineData((1024 * 1024) + 4095)]
    public async Task A_large_object_written_with_direct_io_has_exactly_its_bytes(int length)
    {
        // Direct writes pad to the 4 KiB alignment and truncate back: no padding may survive.
        var content = new byte[length];
        new Random(length).NextBytes(content);
        var properties = await Store.PutAsync("chunks/ab/large", content, BlobCondition.CreateOnly, Ct);
        Assert.Equal(length, properties.Length);
        Assert.Equal(content, await File.ReadAllBytesAsync(Path.Combine(_root!, "chunks", "ab", "large"), Ct));
        using var read = await Store.GetAsync("chunks/ab/large", length, Ct);
        Assert.Equal(content, read.Span.ToArray());
        Assert.Empty(Directory.EnumerateFiles(Path.Combine(_root!, ".tmp")));
    }

    [Fact]
    public async Task Objects_are_plain_files_under_the_root()
    {
        await Store.PutAsync("chunks/ab/abcdef", "data"u8.ToArray(), BlobCondition.CreateOnly, Ct);
        Assert.Equal("data"u8.ToArray(), await File.ReadAllBytesAsync(Path.Combine(_root!, "chunks", "ab", "abcdef"), Ct));
        Assert.Empty(Directory.EnumerateFiles(Path.Combine(_root!, ".tmp")));
    }
}

/// <summary>The same contract with a directory fsync inside every put instead of batched in FlushAsync.</summary>
public sealed class FileSystemBlobStoreImmediateSyncTests : BlobStoreContract
{
    private string? _root;

    protected override Task<IBlobStore> CreateStoreAsync()
    {
        _root = Directory.CreateTempSubdirectory("drydock-fs-sync-").FullName;
        return Task.FromResult<IBlobStore>(new FileSystemBlobStore(new FileSystemBlobStoreOptions { Root = _root, DeferDirectorySync = false }));
    }

    public override async ValueTask DisposeAsync()
    {
        await base.DisposeAsync();
        if (_root is not null)
        {
            Directory.Delete(_root, recursive: true);
        }
    }
}

/// <summary>The same contract with every non-empty object written through O_DIRECT (threshold 1 byte).</summary>
public sealed class FileSystemBlobStoreDirectWriteTests : BlobStoreContract
{
    private string? _root;

    protected override Task<IBlobStore> CreateStoreAsync()
    {
        _root = Directory.CreateTempSubdirectory("drydock-fs-direct-").FullName;
        return Task.FromResult<IBlobStore>(new FileSystemBlobStore(new FileSystemBlobStoreOptions { Root = _root, DirectWriteThreshold = 1 }));
    }

    public override async ValueTask DisposeAsync()
    {
        await base.DisposeAsync();
        if (_root is not null)
        {
            Directory.Delete(_root, recursive: true);
        }
    }
}
