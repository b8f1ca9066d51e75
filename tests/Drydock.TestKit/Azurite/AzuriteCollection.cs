using Xunit;

namespace Drydock.TestKit.Azurite;

/// <summary>Tests in this collection share one Azurite process.</summary>
/// <remarks>xunit v3 needs the definition in the test assembly too: derive a class there with the same attribute.</remarks>
public abstract class AzuriteCollection : ICollectionFixture<AzuriteFixture>
{
    /// <summary>The collection name.</summary>
    public const string Name = "Azurite";
}
