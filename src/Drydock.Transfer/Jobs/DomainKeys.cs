using System.Security.Cryptography;
using System.Text;

namespace Drydock.Transfer.Jobs;

/// <summary>Maps a hypervisor's domain id to the domain's key in the repository (a UUID).</summary>
public static class DomainKeys
{
    /// <summary>The namespace hashed in front of ids that are not UUIDs.</summary>
    public const string NamePrefix = "drydock:domain:";

    /// <summary>
    /// The repository key of a domain: its id when that is a UUID (libvirt, sim), else a deterministic name-based UUID
    /// (the first 16 bytes of SHA-256 of <see cref="NamePrefix"/> + id, RFC 9562 version 8, RFC variant), so the same
    /// domain always lands in the same lineage.
    /// </summary>
    /// <param name="domainId">The hypervisor's domain id (<see cref="Hypervisor.DomainInfo.Id"/>).</param>
    /// <returns>The key.</returns>
    public static Guid ToRepositoryId(string domainId)
    {
        ArgumentException.ThrowIfNullOrEmpty(domainId);
        if (Guid.TryParse(domainId, out var id))
        {
            return id;
        }

        Span<byte> hash = stackalloc byte[SHA256.HashSizeInBytes];
        SHA256.HashData(Encoding.UTF8.GetBytes(NamePrefix + domainId), hash);
        var bytes = hash[..16];
        bytes[6] = (byte)((bytes[6] & 0x0f) | 0x80); // version 8: custom (here SHA-256 name-based)
        bytes[8] = (byte)((bytes[8] & 0x3f) | 0x80); // RFC variant
        return new Guid(bytes, bigEndian: true);
    }
}
