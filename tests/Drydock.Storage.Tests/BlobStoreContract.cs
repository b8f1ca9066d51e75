using System.Text;
using Xunit;

namespace Drydock.Storage.Tests;

/// <summary>The behaviour every <see cref="IBlobStore"/> must have; one subclass per backend.</summary>
public abstract class BlobStoreContract : IAsyncLifetime
{
    private IBlobStore? _store;

    protected IBlobStore Store => _store ?? throw new InvalidOperationException("not initialised");

    protected static CancellationToken Ct => TestContext.Current.CancellationToken;

    /// <summary>Creates an empty store for one test.</summary>
    protected abstract Task<IBlobStore> CreateStoreAsync();

    /// <summary>The smallest object the backend uploads in more than one request (0 if it never does).</summary>
    protected virtual int MultipartThreshold => 0;

    public async ValueTask InitializeAsync() => _store = await CreateStoreAsync();

    public virtual ValueTask DisposeAsync()
    {
        (_store as IDisposable)?.Dispose();
        return ValueTask.CompletedTask;
    }

    [Fact]
    public async Task Put_then_get_returns_the_same_bytes_and_properties()
    {
        var data = Random(10_000, 1);
        var written = await Store.PutAsync("a/b/object-1", data, BlobCondition.CreateOnly, Ct);
        using var read = await Store.GetAsync("a/b/object-1", 1 << 20, Ct);
        Assert.Equal(data, read.ToArray());
        Assert.Equal(10_000, written.Length);
        Assert.Equal(written.ETag, read.Properties.ETag);
        var props = await Store.GetPropertiesAsync("a/b/object-1", Ct);
        Assert.NotNull(props);
        Assert.Equal(10_000, props.Length);
        Assert.Equal(written.ETag, props.ETag);
    }

    [Fact]
    public async Task Flush_after_puts_keeps_every_object()
    {
        for (var i = 0; i < 5; i++)
        {
            await Store.PutAsync($"flush/{i % 2}/o{i}", new byte[i + 1], BlobCondition.CreateOnly, Ct);
        }

        await Store.FlushAsync(Ct);
        await Store.FlushAsync(Ct);
        Assert.Equal(5, (await Store.ListAsync("flush/", Ct).ToListAsync(Ct)).Count);
    }

    [Fact]
    public async Task Empty_object_round_trips()
    {
        await Store.PutAsync("empty", ReadOnlyMemory<byte>.Empty, BlobCondition.CreateOnly, Ct);
        using var read = await Store.GetAsync("empty", 10, Ct);
        Assert.Equal(0, read.Length);
        Assert.Equal(0, (await Store.GetPropertiesAsync("empty", Ct))!.Length);
    }

    [Fact]
    public async Task Create_only_put_on_an_existing_name_fails_and_keeps_the_original()
    {
        await Store.PutAsync("x", "first"u8.ToArray(), BlobCondition.CreateOnly, Ct);
        var e = await Assert.ThrowsAsync<BlobAlreadyExistsException>(() => Store.PutAsync("x", "second"u8.ToArray(), BlobCondition.CreateOnly, Ct));
        Assert.Equal("x", e.BlobName);
        Assert.Contains("x", e.Message, StringComparison.Ordinal);
        using var read = await Store.GetAsync("x", 100, Ct);
        Assert.Equal("first", Encoding.ASCII.GetString(read.Span));
    }

    [Fact]
    public async Task Racing_create_only_puts_have_exactly_one_winner_whose_bytes_are_stored()
    {
        // F29: two writers upload the same name at once.
        var payloads = Enumerable.Range(0, 8).Select(i => Random(4096 + i, 100 + i)).ToArray();
        var results = await Task.WhenAll(payloads.Select(async p =>
        {
            try
            {
                await Store.PutAsync("race/obj", p, BlobCondition.CreateOnly, Ct);
                return p;
            }
            catch (BlobAlreadyExistsException)
            {
                return null;
            }
        }));
        var winners = results.Where(r => r is not null).ToList();
        Assert.Single(winners);
        using var read = await Store.GetAsync("race/obj", 1 << 20, Ct);
        Assert.Equal(winners[0], read.ToArray());
    }

    [Fact]
    public async Task Overwrite_replaces_content_and_changes_the_etag()
    {
        var first = await Store.PutAsync("o", "one"u8.ToArray(), BlobCondition.CreateOnly, Ct);
        var second = await Store.PutAsync("o", "two!"u8.ToArray(), BlobCondition.Overwrite, Ct);
        Assert.NotEqual(first.ETag, second.ETag);
        using var read = await Store.GetAsync("o", 100, Ct);
        Assert.Equal("two!", Encoding.ASCII.GetString(read.Span));
    }

    [Fact]
    public async Task If_match_succeeds_only_with_the_current_etag()
    {
        var first = await Store.PutAsync("cas", "v1"u8.ToArray(), BlobCondition.CreateOnly, Ct);
        var second = await Store.PutAsync("cas", "v2"u8.ToArray(), BlobCondition.IfMatch(first.ETag), Ct);
        await Assert.ThrowsAsync<BlobConditionFailedException>(() => Store.PutAsync("cas", "v3"u8.ToArray(), BlobCondition.IfMatch(first.ETag), Ct));
        using var read = await Store.GetAsync("cas", 100, Ct);
        Assert.Equal("v2", Encoding.ASCII.GetString(read.Span));
        Assert.Equal(second.ETag, read.Properties.ETag);
    }

    [Fact]
    public async Task If_match_on_a_missing_object_fails()
        => await Assert.ThrowsAsync<BlobConditionFailedException>(() => Store.PutAsync("missing-cas", "v"u8.ToArray(), BlobCondition.IfMatch("\"nope\""), Ct));

    [Fact]
    public async Task Ranged_get_returns_the_slice_and_clips_at_the_end()
    {
        var data = Random(1000, 2);
        await Store.PutAsync("r", data, BlobCondition.CreateOnly, Ct);
        using (var mid = await Store.GetAsync("r", new BlobRange(100, 50), 1000, Ct))
        {
            Assert.Equal(data.AsSpan(100, 50).ToArray(), mid.ToArray());
        }

        using (var tail = await Store.GetAsync("r", new BlobRange(990, null), 1000, Ct))
        {
            Assert.Equal(data.AsSpan(990).ToArray(), tail.ToArray());
        }

        using (var clipped = await Store.GetAsync("r", new BlobRange(995, 100), 1000, Ct))
        {
            Assert.Equal(data.AsSpan(995).ToArray(), clipped.ToArray());
        }

        await Assert.ThrowsAsync<BlobInvalidRangeException>(() => Store.GetAsync("r", new BlobRange(5000, 10), 1000, Ct));
    }

    [Fact]
    public async Task Get_over_the_cap_fails_before_reading()
    {
        await Store.PutAsync("big", Random(5000, 3), BlobCondition.CreateOnly, Ct);
        var e = await Assert.ThrowsAsync<BlobTooLargeException>(() => Store.GetAsync("big", 4999, Ct));
        Assert.Equal(5000, e.Length);
    }

    [Fact]
    public async Task Missing_objects_are_reported_as_not_found_or_null()
    {
        var e = await Assert.ThrowsAsync<BlobNotFoundException>(() => Store.GetAsync("no/such", 10, Ct));
        Assert.Equal("no/such", e.BlobName);
        Assert.Null(await Store.GetPropertiesAsync("no/such", Ct));
        Assert.False(await Store.DeleteAsync("no/such", null, Ct));
    }

    [Fact]
    public async Task Delete_removes_and_if_match_protects()
    {
        var p = await Store.PutAsync("d", "x"u8.ToArray(), BlobCondition.CreateOnly, Ct);
        await Assert.ThrowsAsync<BlobConditionFailedException>(() => Store.DeleteAsync("d", "\"stale\"", Ct));
        Assert.True(await Store.ExistsAsync("d", Ct));
        Assert.True(await Store.DeleteAsync("d", p.ETag, Ct));
        Assert.False(await Store.ExistsAsync("d", Ct));
        await Store.PutAsync("d", "y"u8.ToArray(), BlobCondition.CreateOnly, Ct);
        Assert.True(await Store.DeleteAsync("d", null, Ct));
    }

    [Fact]
    public async Task Listing_follows_continuation_in_ordinal_order_and_respects_the_prefix()
    {
        var names = new List<string>();
        for (var i = 0; i < 23; i++)
        {
            names.Add($"chunks/{i % 3:D2}/{i:D4}");
        }

        names.Add("chunks-other/x");
        names.Add("chunksz");
        names.Add("points/a");
        foreach (var n in names)
        {
            await Store.PutAsync(n, Encoding.ASCII.GetBytes(n), BlobCondition.CreateOnly, Ct);
        }

        var listed = new List<BlobProperties>();
        string? continuation = null;
        var pages = 0;
        do
        {
            var page = await Store.ListPageAsync("chunks/", continuation, 7, Ct);
            Assert.True(page.Items.Count <= 7);
            listed.AddRange(page.Items);
            continuation = page.Continuation;
            pages++;
        }
        while (continuation is not null && pages < 100);

        var expected = names.Where(n => n.StartsWith("chunks/", StringComparison.Ordinal)).Order(StringComparer.Ordinal).ToList();
        Assert.Equal(expected, listed.Select(p => p.Name).ToList());
        Assert.All(listed, p => Assert.Equal(Encoding.ASCII.GetByteCount(p.Name), p.Length));
        Assert.True(pages >= 4);

        var all = await Store.ListAsync("chunks", Ct).Select(p => p.Name).ToListAsync(Ct);
        Assert.Equal(names.Where(n => n.StartsWith("chunks", StringComparison.Ordinal)).Order(StringComparer.Ordinal), all);
        Assert.Empty(await Store.ListAsync("nothing/", Ct).ToListAsync(Ct));
    }

    [Fact]
    public async Task Large_objects_round_trip()
    {
        var size = Math.Max(MultipartThreshold * 3 + 12345, 3 * 1024 * 1024 + 17);
        var data = Random(size, 4);
        await Store.PutAsync("large/one", data, BlobCondition.CreateOnly, Ct);
        using var read = await Store.GetAsync("large/one", size, Ct);
        Assert.Equal(data, read.ToArray());
        await Assert.ThrowsAsync<BlobAlreadyExistsException>(() => Store.PutAsync("large/one", data, BlobCondition.CreateOnly, Ct));
    }

    [Theory]
    [InlineData("")]
    [InlineData("/abs")]
    [InlineData("a//b")]
    [InlineData("a/../b")]
    [InlineData(".hidden")]
    [InlineData("sp ace")]
    [InlineData("a/")]
    public async Task Invalid_names_are_rejected(string name)
        => await Assert.ThrowsAsync<ArgumentException>(() => Store.PutAsync(name, "x"u8.ToArray(), BlobCondition.Overwrite, Ct));

    protected static byte[] Random(int length, int seed)
    {
        var data = new byte[length];
        new Random(seed).NextBytes(data);
        return data;
    }
}
