using System.Globalization;

namespace Drydock.Storage.InMemory;

/// <summary>
/// A blob store in process memory, for unit tests and simulations. It follows the whole <see cref="IBlobStore"/>
/// contract (atomic puts, create-only, ETags, ordered listing with continuation) under one lock.
/// </summary>
/// <param name="timeProvider">The clock for <see cref="BlobProperties.LastModified"/>; the system clock if null.</param>
/// <param name="location">The location reported in errors.</param>
public sealed class InMemoryBlobStore(TimeProvider? timeProvider = null, string location = "memory://") : IBlobStore
{
    private readonly Lock _gate = new();
    private readonly SortedDictionary<string, Entry> _objects = new(StringComparer.Ordinal);
    private readonly TimeProvider _time = timeProvider ?? TimeProvider.System;
    private long _version;

    /// <inheritdoc />
    public string Location { get; } = location;

    /// <summary>The number of objects stored.</summary>
    public int Count
    {
        get
        {
            lock (_gate)
            {
                return _objects.Count;
            }
        }
    }

    /// <summary>Replaces an object's bytes without changing its ETag or time: how tests simulate bit rot.</summary>
    /// <param name="name">The object name.</param>
    /// <param name="mutate">Changes the bytes (or returns different ones).</param>
    public void Tamper(string name, Func<byte[], byte[]> mutate)
    {
        lock (_gate)
        {
            var entry = _objects[name];
            _objects[name] = entry with { Data = mutate(entry.Data.ToArray()) };
        }
    }

    /// <summary>Sets an object's last-modified time: how tests age objects past a grace window.</summary>
    /// <param name="name">The object name.</param>
    /// <param name="lastModified">The new time.</param>
    public void SetLastModified(string name, DateTimeOffset lastModified)
    {
        lock (_gate)
        {
            var entry = _objects[name];
            _objects[name] = entry with { LastModified = lastModified };
        }
    }

    /// <inheritdoc />
    public Task<BlobProperties> PutAsync(string name, ReadOnlyMemory<byte> content, BlobCondition condition, CancellationToken cancellationToken = default)
    {
        BlobName.Validate(name);
        cancellationToken.ThrowIfCancellationRequested();
        var data = content.ToArray();
        lock (_gate)
        {
            var exists = _objects.TryGetValue(name, out var current);
            switch (condition.Kind)
            {
                case BlobConditionKind.CreateOnly when exists:
                    throw new BlobAlreadyExistsException(Location, name);
                case BlobConditionKind.IfMatch when !exists || current!.ETag != condition.ETag:
                    throw new BlobConditionFailedException(Location, name);
                default:
                    break;
            }

            var entry = new Entry(data, NextETag(), _time.GetUtcNow());
            _objects[name] = entry;
            return Task.FromResult(entry.ToProperties(name));
        }
    }

    /// <inheritdoc />
    public Task<BlobContent> GetAsync(string name, BlobRange range, long maxLength, CancellationToken cancellationToken = default)
    {
        BlobName.Validate(name);
        cancellationToken.ThrowIfCancellationRequested();
        Entry entry;
        lock (_gate)
        {
            if (!_objects.TryGetValue(name, out entry!))
            {
                throw new BlobNotFoundException(Location, name);
            }
        }

        var (offset, length) = RangeMath.Resolve(Location, name, range, entry.Data.Length);
        if (length > maxLength)
        {
            throw new BlobTooLargeException(Location, name, length, maxLength);
        }

        return Task.FromResult(BlobContent.Copy(entry.Data.AsSpan((int)offset, (int)length), entry.ToProperties(name)));
    }

    /// <inheritdoc />
    public Task<BlobProperties?> GetPropertiesAsync(string name, CancellationToken cancellationToken = default)
    {
        BlobName.Validate(name);
        cancellationToken.ThrowIfCancellationRequested();
        lock (_gate)
        {
            return Task.FromResult(_objects.TryGetValue(name, out var entry) ? entry.ToProperties(name) : null);
        }
    }

    /// <inheritdoc />
    public Task<bool> DeleteAsync(string name, string? ifMatch = null, CancellationToken cancellationToken = default)
    {
        BlobName.Validate(name);
        cancellationToken.ThrowIfCancellationRequested();
        lock (_gate)
        {
            if (!_objects.TryGetValue(name, out var entry))
            {
                if (ifMatch is not null)
                {
                    throw new BlobConditionFailedException(Location, name);
                }

                return Task.FromResult(false);
            }

            if (ifMatch is not null && entry.ETag != ifMatch)
            {
                throw new BlobConditionFailedException(Location, name);
            }

            _objects.Remove(name);
            return Task.FromResult(true);
        }
    }

    /// <inheritdoc />
    public Task<BlobListPage> ListPageAsync(string prefix, string? continuation, int maxResults, CancellationToken cancellationToken = default)
    {
        BlobName.ValidatePrefix(prefix);
        ArgumentOutOfRangeException.ThrowIfLessThan(maxResults, 1);
        cancellationToken.ThrowIfCancellationRequested();
        var items = new List<BlobProperties>(Math.Min(maxResults, 1024));
        lock (_gate)
        {
            foreach (var (name, entry) in _objects)
            {
                if (!name.StartsWith(prefix, StringComparison.Ordinal))
                {
                    continue;
                }

                if (continuation is not null && string.CompareOrdinal(name, continuation) <= 0)
                {
                    continue;
                }

                if (items.Count == maxResults)
                {
                    return Task.FromResult(new BlobListPage(items, items[^1].Name));
                }

                items.Add(entry.ToProperties(name));
            }
        }

        return Task.FromResult(new BlobListPage(items, null));
    }

    private string NextETag() => "\"" + (++_version).ToString("x8", CultureInfo.InvariantCulture) + "\"";

    private sealed record Entry(byte[] Data, string ETag, DateTimeOffset LastModified)
    {
        public BlobProperties ToProperties(string name) => new(name, Data.Length, ETag, LastModified);
    }
}
