using System.Security.Cryptography;
using System.Text.Json;
using Drydock.Repository.Format;
using Drydock.Storage;

namespace Drydock.Repository.Maintenance;

/// <summary>
/// A lease object in the store: created create-only, renewed and released by compare-and-swap on its ETag, taken
/// over (epoch + 1) after it expired by more than the clock-skew margin, or at once when its holder was a process of
/// this host that no longer runs (<see cref="LeaseHolderProcess"/>). Used for the maintenance lease
/// (prune and GC exclude each other) and the per-domain writer lease (one backup per domain at a time).
/// </summary>
public sealed class RepositoryLease : IAsyncDisposable
{
    private readonly IBlobStore _store;
    private readonly TimeProvider _time;
    private readonly TimeSpan _duration;
    private string _etag;

    private RepositoryLease(IBlobStore store, string name, LeaseDocument document, string etag, TimeProvider time, TimeSpan duration)
    {
        _store = store;
        Name = name;
        Document = document;
        _etag = etag;
        _time = time;
        _duration = duration;
    }

    /// <summary>The lease object's name.</summary>
    public string Name { get; }

    /// <summary>The lease as last written.</summary>
    public LeaseDocument Document { get; private set; }

    /// <summary>Whether <see cref="ReleaseAsync"/> ran.</summary>
    public bool Released { get; private set; }

    /// <summary>Takes a lease or fails with <see cref="RepositoryLeaseException"/> naming the holder.</summary>
    /// <param name="store">The store.</param>
    /// <param name="name">The lease object.</param>
    /// <param name="holder">Who takes it (shown to others).</param>
    /// <param name="duration">How long it lasts without renewal.</param>
    /// <param name="skewMargin">How far past expiry another holder must be before a takeover.</param>
    /// <param name="time">The clock.</param>
    /// <param name="cancellationToken">Cancels the attempt.</param>
    /// <returns>The lease.</returns>
    public static async Task<RepositoryLease> AcquireAsync(IBlobStore store, string name, string holder, TimeSpan duration, TimeSpan skewMargin, TimeProvider time, CancellationToken cancellationToken = default)
    {
        var now = time.GetUtcNow();
        // The holder names this process too, so that a later writer on this host can tell when it is gone.
        holder = LeaseHolderProcess.Describe(holder);
        var document = new LeaseDocument
        {
            Holder = holder,
            Token = Convert.ToHexStringLower(RandomNumberGenerator.GetBytes(16)),
            Epoch = 1,
            AcquiredAt = now,
            ExpiresAt = now + duration,
        };
        try
        {
            var written = await store.PutAsync(name, Serialize(document), BlobCondition.CreateOnly, cancellationToken);
            return new RepositoryLease(store, name, document, written.ETag, time, duration);
        }
        catch (BlobAlreadyExistsException)
        {
            // Fall through to inspect the current holder.
        }

        LeaseDocument current;
        string etag;
        using (var content = await store.GetAsync(name, 64 * 1024, cancellationToken))
        {
            etag = content.Properties.ETag;
            try
            {
                current = JsonSerializer.Deserialize(content.Span, RepositoryJsonContext.Default.LeaseDocument)
                          ?? throw new JsonException("null lease");
            }
            catch (JsonException)
            {
                // An unreadable lease (torn by a foreign tool) is treated as expired at its write time.
                current = new LeaseDocument { Holder = "(unreadable)", Token = "", Epoch = 0, AcquiredAt = content.Properties.LastModified, ExpiresAt = content.Properties.LastModified };
            }
        }

        // A holder that was a process of this host which no longer runs (killed, crashed) releases nothing: take its
        // lease over now instead of locking the domain out until it expires.
        if (now < current.ExpiresAt + skewMargin && !LeaseHolderProcess.IsGoneLocally(current.Holder))
        {
            throw new RepositoryLeaseException(
                $"Lease {name} is held by '{current.Holder}' until {current.ExpiresAt:O}. If that process no longer runs on any host, "
                + $"wait for the expiry or delete the object '{name}' from the repository (a holder on this host that is gone is taken over at once)",
                new RepositoryLocationInfo(ObjectName: name));
        }

        var takeover = new LeaseDocument
        {
            Holder = holder,
            Token = document.Token,
            Epoch = current.Epoch + 1,
            AcquiredAt = now,
            ExpiresAt = now + duration,
        };
        try
        {
            var written = await store.PutAsync(name, Serialize(takeover), BlobCondition.IfMatch(etag), cancellationToken);
            return new RepositoryLease(store, name, takeover, written.ETag, time, duration);
        }
        catch (BlobConditionFailedException)
        {
            throw new RepositoryLeaseException($"Lease {name} was taken by another process during takeover", new RepositoryLocationInfo(ObjectName: name));
        }
    }

    /// <summary>Extends the lease; fails with <see cref="RepositoryLeaseException"/> if someone else took it over.</summary>
    /// <param name="cancellationToken">Cancels the renewal.</param>
    /// <returns>A task.</returns>
    public async Task RenewAsync(CancellationToken cancellationToken = default)
    {
        ObjectDisposedException.ThrowIf(Released, this);
        var renewed = new LeaseDocument
        {
            Holder = Document.Holder,
            Token = Document.Token,
            Epoch = Document.Epoch,
            AcquiredAt = Document.AcquiredAt,
            ExpiresAt = _time.GetUtcNow() + _duration,
        };
        try
        {
            var written = await _store.PutAsync(Name, Serialize(renewed), BlobCondition.IfMatch(_etag), cancellationToken);
            _etag = written.ETag;
            Document = renewed;
        }
        catch (BlobConditionFailedException)
        {
            throw new RepositoryLeaseException($"Lease {Name} was lost: another holder took it over after it expired", new RepositoryLocationInfo(ObjectName: Name));
        }
    }

    /// <summary>Deletes the lease if it is still ours.</summary>
    /// <param name="cancellationToken">Cancels the release.</param>
    /// <returns>A task.</returns>
    public async Task ReleaseAsync(CancellationToken cancellationToken = default)
    {
        if (Released)
        {
            return;
        }

        Released = true;
        try
        {
            await _store.DeleteAsync(Name, _etag, cancellationToken);
        }
        catch (BlobConditionFailedException)
        {
            // Someone took it over after it expired: nothing of ours to remove.
        }
    }

    /// <inheritdoc />
    public async ValueTask DisposeAsync() => await ReleaseAsync(CancellationToken.None);

    private static byte[] Serialize(LeaseDocument document) => JsonSerializer.SerializeToUtf8Bytes(document, RepositoryJsonContext.Default.LeaseDocument);
}
