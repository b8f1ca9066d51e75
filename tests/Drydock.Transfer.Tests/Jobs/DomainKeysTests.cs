using Drydock.Transfer.Jobs;
using Xunit;

namespace Drydock.Transfer.Tests.Jobs;

public sealed class DomainKeysTests
{
    [Fact]
    public void A_uuid_id_is_its_own_key()
    {
        var id = Guid.NewGuid();

        Assert.Equal(id, DomainKeys.ToRepositoryId(id.ToString("D")));
        Assert.Equal(id, DomainKeys.ToRepositoryId(id.ToString("N")));
    }

    [Fact]
    public void Other_ids_map_to_a_stable_version_8_name_based_uuid()
    {
        var key = DomainKeys.ToRepositoryId("qemu-vm1");

        Assert.Equal(key, DomainKeys.ToRepositoryId("qemu-vm1"));
        Assert.NotEqual(key, DomainKeys.ToRepositoryId("qemu-vm2"));
        var text = key.ToString("D");
        Assert.Equal('8', text[14]); // version nibble
        Assert.Contains(text[19], "89ab"); // RFC variant
    }
}
